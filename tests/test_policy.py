"""The switch policy as tables: no process, no event loop, no clock (times are plain numbers)."""

from __future__ import annotations

import pytest

from kimina_grpc.supervisor.jobs import PoolKey
from kimina_grpc.supervisor.policy import (
    FAIR_IMPORTS,
    Idle,
    Snapshot,
    Switch,
    SwitchPolicy,
    Waiting,
    spare_plan,
    spare_retry_delay,
)

A, B, C, D = (PoolKey(f"import {h}") for h in "ABCD")
IMPORT = 1.0
FAIR = FAIR_IMPORTS * IMPORT


def snap(
    now: float,
    waiting: list[Waiting],
    idle: list[Idle],
    *,
    max_wait: float = 0.0,
    slots: int = 2,
    proof: float = 0.1,
) -> Snapshot:
    return Snapshot(
        now=now,
        import_cost=IMPORT,
        proof_cost=proof,
        max_wait=max_wait,
        import_slots=slots,
        waiting=tuple(waiting),
        idle=tuple(idle),
    )


# Two REPLs serve A and B, which both still have work; C has none.
TWO_BUSY = [Idle("r1", A, queued=20, repls=1), Idle("r2", B, queued=20, repls=1)]
CASES: list[tuple[str, Snapshot, list[Switch]]] = [
    (
        "exhaustive: C waited an import's worth, A and B still have work: nobody leaves",
        snap(1.0, [Waiting(A, 0, 1), Waiting(B, 0, 1), Waiting(C, 0, 0)], TWO_BUSY),
        [],
    ),
    (
        "just short of the starvation bound: still nobody leaves",
        snap(FAIR - 0.01, [Waiting(A, 0, 1), Waiting(B, 0, 1), Waiting(C, 0, 0)], TWO_BUSY),
        [],
    ),
    (
        "C starves: one REPL goes (the first of equals), the other keeps its header",
        snap(FAIR, [Waiting(A, 0, 1), Waiting(B, 0, 1), Waiting(C, 0, 0)], TWO_BUSY),
        [Switch("r1", C)],
    ),
    (
        "the header just left is not starving: its clock starts when it was last served (no thrash)",
        snap(
            FAIR + 0.5,
            [Waiting(A, 0, 0, served=FAIR), Waiting(B, 0, 1, served=FAIR + 0.4), Waiting(C, 0, 1, served=FAIR + 0.4)],
            [Idle("r2", B, queued=20, repls=1)],
        ),
        [],
    ),
    (
        "served long ago: the displaced header's turn comes after the bound again",
        snap(
            2 * FAIR,
            [Waiting(A, 0, 0, served=FAIR), Waiting(B, 0, 1), Waiting(C, 0, 1)],
            [Idle("r2", B, queued=20, repls=1)],
        ),
        [Switch("r2", A)],
    ),
    (
        "the longest waiting of two starving headers goes first; one slot only",
        snap(
            3 * FAIR,
            [Waiting(A, 0, 1), Waiting(C, 0, 0, served=FAIR), Waiting(D, 0, 0, served=FAIR / 2)],
            [Idle("r1", A, queued=5, repls=1)],
            slots=1,
        ),
        [Switch("r1", D)],
    ),
    (
        "a REPL whose header keeps another REPL leaves first, then the one with least work per REPL",
        snap(
            FAIR,
            [Waiting(A, 0, 2), Waiting(B, 0, 1), Waiting(C, 0, 0), Waiting(D, 0, 0)],
            [Idle("r1", B, queued=3, repls=1), Idle("r2", A, queued=40, repls=2), Idle("r3", A, queued=40, repls=2)],
        ),
        [Switch("r2", C), Switch("r1", D)],
    ),
    (
        "an idle REPL with nothing queued for its header is taken before one with work",
        snap(
            FAIR,
            [Waiting(A, 0, 2), Waiting(C, 0, 0)],
            [Idle("r1", A, queued=5, repls=2, idle_since=0), Idle("r2", B, queued=0, repls=1, idle_since=5)],
        ),
        [Switch("r2", C)],
    ),
    (
        "no import slot: no switch",
        snap(FAIR, [Waiting(A, 0, 1), Waiting(B, 0, 1), Waiting(C, 0, 0)], TWO_BUSY, slots=0),
        [],
    ),
    (
        "a header with a REPL (even one still importing) never starves",
        snap(10 * FAIR, [Waiting(A, 0, 1), Waiting(C, 0, 1)], [Idle("r1", A, queued=5, repls=1)]),
        [],
    ),
    (
        "MAX_WAIT: C's oldest proof would expire unless a REPL starts importing for it now",
        snap(3.0, [Waiting(A, 0, 1), Waiting(C, 0, 0)], [Idle("r1", A, queued=5, repls=1)], max_wait=4.0),
        [Switch("r1", C)],
    ),
    (
        "MAX_WAIT with room to spare: exhaustive service still",
        snap(2.8, [Waiting(A, 0, 1), Waiting(C, 0, 0)], [Idle("r1", A, queued=5, repls=1)], max_wait=4.0),
        [],
    ),
    (
        "MAX_WAIT: the header closest to expiry goes before one that waited longer since service",
        snap(
            FAIR + 3.0,
            [Waiting(A, 0, 1), Waiting(C, 3.0, 0, served=None), Waiting(D, 0, 0, served=FAIR + 1.0)],
            [Idle("r1", A, queued=5, repls=1)],
            max_wait=FAIR + 1.2,
            slots=1,
        ),
        [Switch("r1", D)],
    ),
    (
        "a REPL that arrived less than the bound ago serves its visit out before it leaves",
        snap(
            FAIR + 1.0,
            [Waiting(A, 0, 0, served=FAIR), Waiting(B, 0, 1), Waiting(C, 0, 0)],
            [Idle("r1", B, queued=20, repls=1, arrived=FAIR + 1.0)],
        ),
        [],
    ),
    (
        "... and leaves once its visit is long enough, to the header that waited longest",
        snap(
            2 * FAIR + 1.0,
            [Waiting(A, 0, 0, served=FAIR), Waiting(B, 0, 1), Waiting(C, 0, 0)],
            [Idle("r1", B, queued=20, repls=1, arrived=FAIR + 1.0)],
        ),
        [Switch("r1", C)],
    ),
    (
        "MAX_WAIT overrides the visit's length",
        snap(3.0, [Waiting(A, 0, 1), Waiting(C, 0, 0)], [Idle("r1", A, queued=5, repls=1, arrived=2.5)], max_wait=4.0),
        [Switch("r1", C)],
    ),
    (
        "a proof that wants a REPL of its own waits one import, not the bound: its visit is one proof",
        snap(IMPORT, [Waiting(A, 0, 1), Waiting(PoolKey("import A", fresh=True), 0, 0)], TWO_BUSY[:1]),
        [Switch("r1", PoolKey("import A", fresh=True))],
    ),
    (
        "a REPL never switches to its own header",
        snap(FAIR, [Waiting(C, 0, 0)], [Idle("r1", C, queued=0, repls=0)]),
        [],
    ),
]


@pytest.mark.parametrize(("why", "state", "expected"), CASES, ids=[c[0] for c in CASES])
def test_switches(why: str, state: Snapshot, expected: list[Switch]) -> None:
    assert SwitchPolicy().switches(state) == expected, why


def simulate(repls: int, headers: int, per_header: int, proof: float) -> tuple[float, int]:
    """A discrete-event run of the rule alone (no pool): every REPL idle-checks its header; the
    free ones go to the header with the most work per REPL, as the pool's conversion rule does.
    Returns (makespan, imports)."""
    keys = [PoolKey(f"import {i}") for i in range(headers)]
    queued = {k: per_header for k in keys}
    served: dict[PoolKey, float] = {}
    at = [keys[i % headers] for i in range(repls)]
    free = [IMPORT] * repls  # when each REPL is next idle
    arrived = list(free)
    imports = repls
    policy = SwitchPolicy()
    while any(queued.values()):
        r = min(range(repls), key=free.__getitem__)
        now = free[r]
        counts = {k: at.count(k) for k in keys}
        state = snap(
            now,
            [Waiting(k, 0.0, counts[k], served.get(k)) for k in keys if queued[k]],
            [Idle(f"r{r}", at[r], queued[at[r]], counts[at[r]], arrived=arrived[r])],
        )
        moves = policy.switches(state)
        if not moves and not queued[at[r]]:
            todo = [k for k in keys if queued[k]]
            moves = [Switch(f"r{r}", max(todo, key=lambda k: queued[k] / (counts[k] + 1)))]
        if moves:
            at[r] = moves[0].to
            free[r] = arrived[r] = now + IMPORT
            imports += 1
            continue
        queued[at[r]] -= 1
        served[at[r]] = now
        free[r] = now + proof
    return max(free), imports


def test_three_headers_on_two_repls_do_not_thrash() -> None:
    makespan, imports = simulate(repls=2, headers=3, per_header=30, proof=0.1)
    bound = (90 * 0.1 + 3 * IMPORT) / 2
    assert imports <= 6
    assert makespan <= 1.25 * bound


def test_headers_outnumbering_repls_for_long_take_turns_and_pay_a_bounded_share_in_imports() -> None:
    # 400 s of work per header on one REPL: each waits its turn, none waits for another's whole batch.
    makespan, imports = simulate(repls=1, headers=3, per_header=4000, proof=0.1)
    assert imports > 3  # turns were taken (exhaustive alone would be 3 imports)
    assert (imports - 3) * IMPORT <= makespan / FAIR_IMPORTS


FRESH_A = PoolKey("import A", fresh=True)
SPARE_CASES: list[
    tuple[str, int, dict[PoolKey, int], dict[PoolKey, int], dict[PoolKey, int], tuple[list[PoolKey], list[PoolKey]]]
] = [
    ("no spares asked: none started, none kept", 0, {A: 4}, {A: 9}, {A: 1}, ([], [A])),
    ("one header in use takes every spare", 2, {A: 4}, {}, {}, ([A, A], [])),
    ("the header with the most working REPLs per spare first", 2, {A: 3, B: 3, C: 2}, {}, {}, ([A, B], [])),
    ("ties on REPLs go to the header with more queued", 1, {A: 2, B: 2}, {A: 1, B: 5}, {}, ([B], [])),
    ("proportional: 6 REPLs of A and 2 of B share 3 spares 2/1", 3, {A: 6, B: 2}, {}, {}, ([A, A, B], [])),
    ("already in place: nothing to do", 2, {A: 3, B: 3}, {}, {A: 1, B: 1}, ([], [])),
    ("a header no longer in use gives its spare to one in use", 1, {B: 2}, {}, {A: 1}, ([B], [A])),
    ("queued work alone is use (a header whose REPLs are importing elsewhere)", 1, {}, {C: 3}, {}, ([C], [])),
    ("nothing in use: every spare retired", 2, {}, {}, {A: 1, B: 1}, ([], [A, B])),
    ("a fresh key (one proof per REPL) never gets a spare", 1, {FRESH_A: 1}, {FRESH_A: 1}, {}, ([], [])),
    (
        "a spare of a header still in use stays where it is (moving it costs an import)",
        1,
        {A: 1, B: 6},
        {},
        {A: 1},
        ([], []),
    ),
    (
        "fewer spares asked than there are: the one the plan does not want goes",
        1,
        {A: 4, B: 4},
        {},
        {A: 1, B: 1},
        ([], [B]),
    ),
]


@pytest.mark.parametrize(
    ("why", "expiring", "spares", "expected"),
    [
        ("a REPL near its use limit gets its successor ahead, before the busier header", {A: 1}, {}, ([A, B], [])),
        ("two near the limit take both spares", {A: 2}, {}, ([A, A], [])),
        ("no room: the spares in place stay (best effort within the count)", {A: 1}, {B: 2}, ([], [])),
    ],
)
def test_spare_plan_starts_successors_ahead(
    why: str, expiring: dict[PoolKey, int], spares: dict[PoolKey, int], expected: tuple[list[PoolKey], list[PoolKey]]
) -> None:
    assert spare_plan(2, {A: 1, B: 6}, {}, spares, expiring) == expected, why


@pytest.mark.parametrize(
    ("why", "n", "working", "queued", "spares", "expected"), SPARE_CASES, ids=[c[0] for c in SPARE_CASES]
)
def test_spare_plan(
    why: str,
    n: int,
    working: dict[PoolKey, int],
    queued: dict[PoolKey, int],
    spares: dict[PoolKey, int],
    expected: tuple[list[PoolKey], list[PoolKey]],
) -> None:
    assert spare_plan(n, working, queued, spares) == expected, why


@pytest.mark.parametrize(
    ("why", "cold", "spares", "expected"),
    [
        ("a header none of whose REPLs has imported yet gets no spare, and its share waits for it", {A}, {}, ([B], [])),
        ("its spare already there is kept, not retired", {A}, {A: 1}, ([B], [])),
        ("both cold: nothing starts", {A, B}, {}, ([], [])),
    ],
)
def test_spare_plan_waits_for_a_header_to_import_once(
    why: str, cold: set[PoolKey], spares: dict[PoolKey, int], expected: tuple[list[PoolKey], list[PoolKey]]
) -> None:
    assert spare_plan(2, {A: 2, B: 2}, {A: 3}, spares, cold=cold) == expected, why


@pytest.mark.parametrize(
    ("why", "failures", "delay"),
    [
        ("no failure: a spare may start at once", 0, 0.0),
        ("the first failure waits the period (readiness's backoff)", 1, 1.0),
        ("each failure in a row doubles it", 2, 2.0),
        ("...", 4, 8.0),
        ("up to the max", 6, 30.0),
        ("a header whose spares always die stays at the max", 10_000, 30.0),
    ],
)
def test_spare_retry_delay(why: str, failures: int, delay: float) -> None:
    assert spare_retry_delay(failures) == delay, why
