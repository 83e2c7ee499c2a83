"""The pool's placement rules as pure functions (policy.py): no process, no event loop, no clock."""

from __future__ import annotations

from kimina_grpc.supervisor.jobs import PoolKey
from kimina_grpc.supervisor.policy import CONVERT_FACTOR, move_target, neediest, worth_converting

A, B, C = PoolKey("import A"), PoolKey("import B"), PoolKey("import C")


def test_a_new_repl_goes_where_the_most_proofs_wait_per_repl() -> None:
    assert neediest([A, B], {A: 10, B: 10}, {A: 3, B: 1}, {}) == B
    assert neediest([A, B], {A: 10, B: 2}, {A: 3, B: 0}, {}) == A  # 10/4 > 2/1
    # Ties go to the oldest key (the first of `keys`).
    assert neediest([B, A], {A: 4, B: 4}, {}, {}) == B


def test_no_new_repl_for_proofs_that_repls_on_their_way_will_take() -> None:
    assert neediest([A], {A: 2}, {A: 2}, {A: 2}) is None
    assert neediest([A, B], {A: 2, B: 1}, {A: 2}, {A: 2}) == B


def test_an_idle_repl_converts_at_once_to_a_header_nothing_serves() -> None:
    assert worth_converting(backlog=0.1, repls=0, import_cost=15.0)


def test_a_short_burst_does_not_pull_a_repl_away_hysteresis() -> None:
    import_cost = 10.0
    at_bound = CONVERT_FACTOR * import_cost * 2  # two REPLs after the conversion
    assert not worth_converting(backlog=at_bound, repls=1, import_cost=import_cost)
    assert worth_converting(backlog=at_bound + 1, repls=1, import_cost=import_cost)


def test_eight_repls_over_three_equal_headers_one_changes_sides_midway() -> None:
    # 3/3/2 at the start, equal work: the header with 2 REPLs drains last. One REPL of a header
    # with 3 moves to it once that evens the finish times out by more than an import.
    repls = {A: 3, B: 3, C: 2}
    assert move_target(A, {A: 30.0, B: 30.0, C: 60.0}, repls, import_cost=1.0) == C
    # Balanced: nobody moves.
    assert move_target(A, {A: 30.0, B: 30.0, C: 20.0}, repls, import_cost=1.0) is None
    # Not for an import that the evening-out does not pay for.
    assert move_target(A, {A: 30.0, B: 30.0, C: 24.0}, repls, import_cost=10.0) is None


def test_a_repl_alone_on_its_header_or_a_fresh_one_never_moves() -> None:
    assert move_target(C, {A: 100.0, C: 1.0}, {A: 1, C: 1}, import_cost=1.0) is None
    fresh = PoolKey("import A", fresh=True)
    assert move_target(fresh, {fresh: 1.0, B: 100.0}, {fresh: 2, B: 1}, import_cost=1.0) is None
