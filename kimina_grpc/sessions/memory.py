"""The session REPLs' resident-memory watchdog (LEAN_SERVER_MAX_REPL_RSS, the pool's budget): what a
REPL's size means for it (a pure policy) and the sampler that watches it during a tactic. Memory is
counted as the pool counts it, by `Repl.rss` (the whole process tree, walked afresh each time).

- Above the budget (during a tactic, sampled, or at its reply): the tactic that took it there is
  answered ERROR (out of memory), its state is not recorded (a replay would grow the same way), the
  REPL is killed and its other sessions are restored elsewhere, as after a crash.
- Above `RECYCLE_FRACTION` of the budget after a tactic: the REPL grew over many states, not by one
  tactic. The tactic's answer stands and the REPL is recycled (its sessions replayed on a fresh one),
  unless the REPL was already that large right after its sessions were replayed onto it (a move
  cannot make it smaller: it would only move again and again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from kimina_grpc.repl import Repl

PERIOD = 0.25
"""Seconds between samples during a tactic (the pool's watchdog period)."""
RECYCLE_FRACTION = 0.75


class Size(Enum):
    FINE = 1
    RECYCLE = 2
    OVER = 3


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    limit: int | None
    """Resident bytes a session REPL may hold (None: no watchdog)."""

    def judge(self, rss: int, floor: int) -> Size:
        """What `rss` after a tactic means for a REPL whose size was `floor` once its sessions were
        on it (after its import, or after a move's replay)."""
        if self.limit is None:
            return Size.FINE
        if rss > self.limit:
            return Size.OVER
        mark = self.limit * RECYCLE_FRACTION
        return Size.RECYCLE if rss > mark and floor <= mark else Size.FINE

    def of(self, repl: Repl, floor: int) -> Size:
        """`judge` of `repl`'s size now (its process tree is walked only when there is a budget)."""
        return Size.FINE if self.limit is None else self.judge(repl.rss(), floor)

    def measure(self, repl: Repl) -> int:
        """`repl`'s size as a floor (0 when there is no budget: nothing is walked)."""
        return 0 if self.limit is None else repl.rss()

    def error(self) -> str:
        return f"out of memory: the REPL's resident memory passed {self.limit} bytes on this tactic"


async def watch(repl: Repl, budget: MemoryBudget, over: Callable[[], None]) -> None:
    """Sample `repl` every PERIOD while it runs a tactic (cancelled at the reply); call `over` once
    and stop when it passes the budget."""
    if budget.limit is None:
        return
    while repl.alive:
        await asyncio.sleep(PERIOD)
        if repl.rss() > budget.limit:
            over()
            return
