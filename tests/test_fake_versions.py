"""The stand-in's version table (testing/fake_versions.py) as a pure object: each behaviour holds
exactly over the Lean versions its source says (the manual in fake_repl.py), with no process."""

from __future__ import annotations

import pytest

from kimina_grpc.testing.fake_versions import LeanVersion

# behaviour -> (first version it holds for, first version it no longer holds for, or None)
RANGES: dict[str, tuple[tuple[int, int], tuple[int, int] | None]] = {
    "modules": ((4, 22), None),
    "trims_requests": ((4, 22), None),
    "replays_unpickle": ((4, 10), (4, 30)),
    "goals_accomplished": ((4, 19), (4, 20)),
    "module_refuses_print_axioms": ((4, 22), (4, 30)),
    "axioms_as_constants": ((4, 30), None),
}


@pytest.mark.parametrize("behaviour", sorted(RANGES))
def test_each_behaviour_holds_over_its_range_only(behaviour: str) -> None:
    since, until = RANGES[behaviour]
    for minor in range(0, 40):
        version = LeanVersion((4, minor))
        expected = since <= (4, minor) and (until is None or (4, minor) < until)
        assert getattr(version, behaviour) is expected, (behaviour, minor)


def test_options_lean_lacks_before_a_version_are_unknown() -> None:
    assert not LeanVersion((4, 21)).knows_option("warn.sorry")
    assert LeanVersion((4, 22)).knows_option("warn.sorry")
    assert not LeanVersion((4, 10)).knows_option("pp.maxSteps")
    assert LeanVersion((4, 11)).knows_option("pp.maxSteps")
    assert LeanVersion((4, 0)).knows_option("maxHeartbeats")  # an option of every version


@pytest.mark.parametrize(
    ("text", "number"), [("v4.19.0", (4, 19)), ("v4.22.0-rc1", (4, 22)), ("4.30.1", (4, 30)), (None, (4, 19))]
)
def test_the_version_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, text: str | None, number: tuple[int, int]
) -> None:
    if text is None:
        monkeypatch.delenv("KIMINA_FAKE_LEAN_VERSION", raising=False)
    else:
        monkeypatch.setenv("KIMINA_FAKE_LEAN_VERSION", text)
    assert LeanVersion.from_environment().number == number
