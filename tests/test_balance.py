"""The cluster balancer and target parsing as pure objects: no processes, no clock."""

from __future__ import annotations

import pytest

from kimina_grpc.client._backends import Targets, join_address, parse_targets, split_address
from kimina_grpc.client._balance import Balancer, Choice, Load, backend_window, header_key, rank

BACKENDS = ["10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"]


def loads(
    in_flight: dict[str, int], *, window: int = 4, repls: int = 2, down: frozenset[str] = frozenset()
) -> list[Load]:
    return [Load(b, b not in down, in_flight.get(b, 0), window, repls) for b in BACKENDS]


def test_header_key_is_the_import_lines_whatever_their_layout() -> None:
    a = "import Mathlib\nimport Aesop\n\ntheorem t : True := trivial"
    b = "-- a comment\n/- a block\ncomment -/\nimport  Mathlib\n\nimport Aesop\ntheorem u : 1 = 1 := rfl"
    assert header_key(a) == header_key(b) == "import Mathlib\nimport Aesop"
    assert header_key("theorem t : True := trivial\nimport Mathlib") == ""
    assert header_key("import Mathlib\nimport Mathlib\n#check Nat") == "import Mathlib"
    assert header_key("/-- doc -/\ntheorem t : True := trivial") == ""


def test_rank_is_stable_and_a_removed_backend_moves_only_its_own_headers() -> None:
    keys = [f"import Mod{i}" for i in range(300)]
    first = {k: rank(k, BACKENDS)[0] for k in keys}
    assert first == {k: rank(k, list(reversed(BACKENDS)))[0] for k in keys}  # order of the list does not matter
    assert set(first.values()) == set(BACKENDS)  # headers spread over all backends
    assert min(list(first.values()).count(b) for b in BACKENDS) > 60  # roughly evenly (100 each expected)
    gone = BACKENDS[0]
    after = {k: rank(k, BACKENDS[1:])[0] for k in keys}
    assert all(after[k] == first[k] for k in keys if first[k] != gone)


@pytest.mark.parametrize(
    ("in_flight", "repls", "expected"),
    [
        ({}, 2, "first"),  # room on the preferred backend
        ({"first": 3}, 2, "first"),
        ({"first": 4}, 2, "second"),  # full: spill to the next in the header's ranking with an idle REPL
        ({"first": 4, "second": 2}, 2, "third"),  # the second has no idle REPL
        ({"first": 4, "second": 1}, 2, "second"),
        ({"first": 4, "second": 2, "third": 2}, 2, None),  # nobody idles: wait for a slot
    ],
)
def test_affinity_prefers_the_headers_backend_and_spills_only_to_idle_repls(
    in_flight: dict[str, int], repls: int, expected: str | None
) -> None:
    key = "import Mathlib"
    order = rank(key, BACKENDS)
    named = dict(zip(("first", "second", "third"), order, strict=True))
    claimed = BACKENDS  # every backend owns a header with proofs waiting: spill only into idle REPLs
    choice = Balancer().choose(key, loads({named[k]: v for k, v in in_flight.items()}, repls=repls), claimed)
    if expected is None:
        assert choice is None
    else:
        assert choice == Choice(named[expected], spilled=expected != "first")


def test_a_backend_that_is_not_ready_gets_nothing() -> None:
    key = "import Mathlib"
    preferred = rank(key, BACKENDS)[0]
    choice = Balancer().choose(key, loads({}, down=frozenset({preferred})))
    assert choice is not None and choice.backend != preferred
    assert not choice.spilled  # among the ready ones it is the first
    assert Balancer().choose(key, loads({}, down=frozenset(BACKENDS))) is None


def test_without_affinity_the_shortest_queue_wins() -> None:
    balancer = Balancer(affinity=False)
    choice = balancer.choose("x", loads({BACKENDS[0]: 1, BACKENDS[1]: 3, BACKENDS[2]: 2}))
    assert choice == Choice(BACKENDS[0], spilled=False)
    assert balancer.choose("x", loads(dict.fromkeys(BACKENDS, 4))) is None


def test_a_single_header_batch_fills_every_backend() -> None:
    """A GRPO group (one header) fills its owner's window, then the idle REPLs elsewhere, then the
    others' windows (no other header waits for them), shortest queue first."""
    balancer = Balancer()
    key = "import Mathlib"
    owner = balancer.owner(key, BACKENDS)
    in_flight: dict[str, int] = {}
    order = []
    while (choice := balancer.choose(key, loads(in_flight), claimed={owner})) is not None:
        in_flight[choice.backend] = in_flight.get(choice.backend, 0) + 1
        order.append(choice)
    assert in_flight == dict.fromkeys(BACKENDS, 4)
    assert [c.backend for c in order[:4]] == [owner] * 4 and not any(c.spilled for c in order[:4])
    assert all(c.spilled for c in order[4:])
    others = [c.backend for c in order[4:8]]
    assert len(set(others)) == 2  # the two idle REPLs of each other backend before any queue


def test_backend_window_is_four_proofs_per_repl_within_the_calls_window() -> None:
    assert backend_window(64, 8) == 32
    assert backend_window(10, 8) == 10
    assert backend_window(64, 0) == 64  # unknown: the call's window
    assert backend_window(1, 1) == 1


def test_cluster_targets() -> None:
    assert parse_targets("localhost:50051") is None
    assert parse_targets("a:1,b:2") == Targets(addresses=("a:1", "b:2"))
    assert parse_targets("ipv4:10.0.0.1:5,10.0.0.2") == Targets(addresses=("10.0.0.1:5", "10.0.0.2:50051"))
    assert parse_targets("dns:///kimina.default.svc:50051") == Targets(dns=("kimina.default.svc", 50051))
    assert parse_targets("dns://8.8.8.8/kimina:7000") == Targets(dns=("kimina", 7000))
    assert parse_targets("dns:kimina") == Targets(dns=("kimina", 50051))
    with pytest.raises(ValueError, match="names no host"):
        parse_targets("dns:///")
    assert split_address("[::1]:5") == ("::1", 5)
    assert split_address("::1") == ("::1", 50051)
    assert join_address("::1", 5) == "[::1]:5"


def test_headers_get_owners_in_fair_shares_and_keep_them() -> None:
    balancer = Balancer()
    three = [f"import H{i}" for i in range(3)]
    owners = [balancer.owner(k, BACKENDS) for k in three]
    assert sorted(owners) == sorted(BACKENDS)  # one each, whatever the hashes say
    assert [balancer.owner(k, BACKENDS) for k in reversed(three)] == list(reversed(owners))  # sticky
    six = [*three, *(f"import G{i}" for i in range(3))]
    assert sorted(balancer.owner(k, BACKENDS) for k in six) == sorted(BACKENDS * 2)
    one = Balancer()
    assert one.owner("import Mathlib", BACKENDS) == rank("import Mathlib", BACKENDS)[0]  # every client agrees
    lost = owners[0]
    rest = [b for b in BACKENDS if b != lost]
    assert [balancer.owner(k, rest) for k in three[1:]] == owners[1:]  # only the lost backend's header moves
    assert balancer.owner(three[0], rest) in rest
