"""What an idle REPL does on a scheduling pass (`policy.idle_step`), as a table: no process, no
event loop, no clock. Above all, no idle fresh REPL is left behind."""

from __future__ import annotations

import pytest

from kimina_grpc.supervisor.jobs import PoolKey
from kimina_grpc.supervisor.policy import Step, idle_step

A, B, C = PoolKey("import A"), PoolKey("import B"), PoolKey("import C")
FRESH_A = PoolKey("import A", fresh=True)

CASES = [
    # (why, its key, proofs of its key queued, the switch policy's choice, move_target's, expected)
    ("a fresh REPL whose proof went (cancelled, expired) goes", FRESH_A, 0, None, None, (Step.RELEASE, None)),
    ("even when a header starves, it goes rather than switch", FRESH_A, 0, B, None, (Step.RELEASE, None)),
    ("a fresh REPL with its proof still queued runs it", FRESH_A, 1, None, None, (Step.RUN, None)),
    ("a REPL with work of its own runs it", A, 3, None, None, (Step.RUN, None)),
    ("a REPL with nothing queued waits warm", A, 0, None, None, (Step.WAIT, None)),
    ("the switch policy moves it to a starving header", A, 3, B, None, (Step.SWITCH, B)),
    ("a switch wins over a move", A, 3, B, C, (Step.SWITCH, B)),
    ("a REPL whose header drains first moves to the one that drains last", A, 3, None, C, (Step.MOVE, C)),
    ("with nothing of its own queued, a move is not its step", A, 0, None, C, (Step.WAIT, None)),
]


@pytest.mark.parametrize(("why", "key", "queued", "switch", "move", "expected"), CASES, ids=[c[0] for c in CASES])
def test_idle_step(
    why: str, key: PoolKey, queued: int, switch: PoolKey | None, move: PoolKey | None, expected: tuple[Step, PoolKey]
) -> None:
    assert idle_step(key, queued, switch, move) == expected
