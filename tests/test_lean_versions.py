"""What changes with the Lean version, in the stand-in REPL and in the real-Lean acceptance suite
(issue 31 items 5 and 7): every behaviour the suite's expectations depend on is switched by the
stand-in's KIMINA_FAKE_LEAN_VERSION, and the suite expects, at the installer's default version, what
that version does."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from kimina_grpc.repl import ReplSpec, Verdict, split_header
from kimina_grpc.repl.protocol import parse_reply
from kimina_grpc.supervisor import CheckOptions, PoolSettings, Supervisor
from kimina_grpc.supervisor.jobs import TrustLevel, TrustPolicy
from kimina_grpc.testing.fake_repl import chunks

from .helpers.paths import ROOT
from .helpers.pool import ARGV
from .real_lean import cases as suite


def installer_default() -> tuple[int, int]:
    text = (ROOT / "kimina_grpc/tools/install_lean.sh").read_text()
    found = re.search(r"LEAN_VERSION=\$\{LEAN_SERVER_LEAN_VERSION:-v(\d+)\.(\d+)\.\d+\}", text)
    assert found, "the installer's default Lean version is not where this test reads it"
    return int(found[1]), int(found[2])


def session(version: str, requests: Sequence[object], cwd: Path) -> list[dict[str, Any]]:
    """The stand-in's replies to `requests`, modelling Lean `version`."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n\n" for r in requests)
    env = {**os.environ, "KIMINA_FAKE_LEAN_VERSION": version}
    done = subprocess.run(ARGV, input=text, capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False)
    replies = [json.loads(b) for b in chunks(done.stdout)]
    if done.returncode:
        replies.append({"exit": done.returncode, "stderr": done.stderr})
    return replies


# --- item 5: the suite's versions and the stand-in's switches -----------------------------------------


def test_every_real_lean_case_states_its_versions_and_one_expectation_per_version() -> None:
    bases: dict[str, list[suite.Case]] = {}
    for case in suite.CASES:
        bases.setdefault(case.name.removesuffix("-before-4.22"), []).append(case)
    for minor in range(10, 40):
        for name, variants in bases.items():
            holding = [c.name for c in variants if c.holds_for((4, minor))]
            assert len(holding) <= 1, f"v4.{minor}: {holding} both hold"
            if all(c.versions != suite.REPLAY for c in variants):
                assert holding, f"v4.{minor}: no expectation for {name}"


@pytest.mark.parametrize("level", list(TrustLevel), ids=[lv.name.lower() for lv in TrustLevel])
async def test_the_suite_at_the_installers_default_expects_what_that_lean_does(level: TrustLevel) -> None:
    """The cases whose expectation at the default version comes from a version switch (an option that
    version lacks), through the stand-in modelling that version: the same verdicts, at each level."""
    default = installer_default()
    cases = [c for c in suite.CASES if c.holds_for(default) and Verdict.INVALID in c.expected]
    assert {"warn.sorry-sorryAx-before-4.22", "sorryAx-from-characters-before-4.22"} <= {c.name for c in cases}
    env = {"KIMINA_FAKE_LEAN_VERSION": f"v{default[0]}.{default[1]}.0"}
    sup = Supervisor(PoolSettings(spec=ReplSpec(argv=ARGV, env=env), max_repls=1, import_cost_hint=0.1))
    await sup.start()
    try:
        for case in cases:
            trust = None if level is TrustLevel.CHECK else TrustPolicy(level, "t", case.statement, case.allowed)
            outcome = await sup.submit(
                split_header(suite.HEADER + case.body), CheckOptions(timeout=30, trust=trust)
            ).future
            assert outcome.verdict is case.expected[level.value - 1], (case.name, outcome)
            if "warn.sorry" in case.body:
                assert outcome.reply is not None
                assert any(m.data == "unknown option 'warn.sorry'" for m in outcome.reply.messages)
    finally:
        await sup.close()


SILENCED = [
    {"cmd": "import Mathlib"},
    {"cmd": "set_option warn.sorry false in\ntheorem t : 1 = 2 := sorryAx _ false\n-- fake: sorry-ax", "env": 0},
    {"cmd": "#print axioms t", "env": 1},
]


def test_warn_sorry_is_an_unknown_option_before_lean_4_22(tmp_path: Path) -> None:
    old = session("v4.19.0", SILENCED, tmp_path)
    assert [m["data"] for m in old[1]["messages"]] == ["unknown option 'warn.sorry'"]
    assert old[1]["messages"][0]["pos"] == {"line": 1, "column": 11}
    assert old[2]["messages"][0]["data"] == "unknown constant 't'"  # the command under `in` never ran
    new = session("v4.22.0", SILENCED, tmp_path)
    assert "messages" not in new[1]  # silenced: no warning
    assert new[2]["messages"][0]["data"] == "'t' depends on axioms: [sorryAx]"


def test_the_kernel_replays_an_unpickled_environment_from_repl_4_10_to_4_29(tmp_path: Path) -> None:
    requests = [
        {"cmd": "set_option debug.skipKernelTC true in\ntheorem t : False := trivial\n-- fake: kernel-reject"},
        {"pickleTo": str(tmp_path / "p.olean"), "env": 0},
        {"unpickleEnvFrom": str(tmp_path / "p.olean")},
    ]
    replayed = session("v4.29.0", requests, tmp_path)
    assert replayed[-1]["exit"] == 1 and "(kernel) declaration type mismatch" in replayed[-1]["stderr"]
    assert session("v4.30.0", requests, tmp_path)[-1] == {"env": 1}  # replayToElabEnv: no kernel check


def test_module_headers_from_lean_4_22(tmp_path: Path) -> None:
    module = [{"cmd": "module\n\npublic import Mathlib\ntheorem t : True := trivial"}]
    old = session("v4.19.0", module, tmp_path)[0]
    assert [m["pos"]["line"] for m in old["messages"] if m["severity"] == "error"] == [1, 3]
    assert "messages" not in session("v4.22.0", module, tmp_path)[0]


# --- item 7: "Goals accomplished!" ------------------------------------------------------------------

# leanprover-community/repl at tag v4.19.0, test/pickle_open.{in,expected.out} and
# test/Mathlib/test/H20231020 (its first command cut to one import): what REPL v4.19.0 answered.
V4_19_SESSIONS = {
    "pickle_open": (
        [
            {"cmd": "def X.Y : Nat := 37"},
            {"cmd": "open X", "env": 0},
            {"cmd": "example : Y = 37 := rfl", "env": 1},
            {"pickleTo": "test/e.olean", "env": 1},
        ],
        [{"env": 0}, {"env": 1}, "1:0-1:23", {"env": 1}],
    ),
    "H20231020": (
        [
            {"cmd": "import Mathlib.Tactic.NormNum.GCD\nopen BigOperators\nopen Real\nopen Nat\nopen Topology"},
            {"cmd": "theorem mathd_numbertheory_188 : Nat.gcd 180 168 = 12 := by norm_num", "env": 0},
            {
                "cmd": "theorem mathd_numbertheory_403 : ∑ k ∈ (Nat.properDivisors 198), k = 270 := by simp "
                "(config := {decide := true})",
                "env": 0,
            },
        ],
        [{"env": 0}, "1:0-1:68", "1:0-1:112"],
    ),
}


def _expected(reply: Any, env: int) -> dict[str, Any]:
    """A recorded reply: as is, or "L:C-L:C" for {"messages": [the info over that range], "env": env}."""
    if isinstance(reply, dict):
        return reply
    (line, column), (end_line, end_column) = (map(int, p.split(":")) for p in reply.split("-"))
    info = {
        "severity": "info",
        "pos": {"line": line, "column": column},
        "endPos": {"line": end_line, "column": end_column},
        "data": "Goals accomplished!",
    }
    return {"messages": [info], "env": env}


@pytest.mark.parametrize("name", list(V4_19_SESSIONS))
def test_the_stand_in_says_goals_accomplished_where_repl_4_19_does(name: str, tmp_path: Path) -> None:
    (tmp_path / "test").mkdir()
    requests, recorded = V4_19_SESSIONS[name]
    expected = [_expected(r, i) for i, r in enumerate(recorded)]
    assert session("v4.19.0", requests, tmp_path) == expected
    later = session("v4.22.0", requests, tmp_path)  # a silent message from 4.20 on: the REPL omits it
    assert not any("messages" in r for r in later)


def test_goals_accomplished_is_dropped_from_what_users_see() -> None:
    recorded = json.dumps(_expected("1:0-1:26", 2))
    assert parse_reply(recorded).messages == ()
    # Only that fixed info: the same text as a warning, or another info, is Lean's and stays.
    other = json.loads(recorded)
    other["messages"].append({**other["messages"][0], "severity": "warning"})
    other["messages"].append({**other["messages"][0], "data": "Goals accomplished! 🎉"})
    assert [(m.severity.value, m.data) for m in parse_reply(json.dumps(other)).messages] == [
        ("warning", "Goals accomplished!"),
        ("info", "Goals accomplished! 🎉"),
    ]


async def test_a_valid_proof_on_lean_4_19_shows_no_message(tmp_path: Path) -> None:
    env = {"KIMINA_FAKE_LEAN_VERSION": "v4.19.0"}
    sup = Supervisor(PoolSettings(spec=ReplSpec(argv=ARGV, env=env), max_repls=1, import_cost_hint=0.1))
    await sup.start()
    try:
        code = "import Mathlib\n\ntheorem t : 1 + 1 = 2 := by norm_num\n\nexample : True := trivial"
        out = await sup.submit(split_header(code), CheckOptions(timeout=30)).future
        assert out.verdict is Verdict.VALID and out.reply is not None and out.reply.messages == ()
    finally:
        await sup.close()
