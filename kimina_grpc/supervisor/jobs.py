"""What the supervisor is given (a Job) and what it answers (an Outcome)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from kimina_grpc.repl import InfotreeMode, Reply, Split, Verdict


@dataclass(frozen=True, slots=True)
class CheckOptions:
    timeout: float
    infotree: InfotreeMode | None = None
    all_tactics: bool = False
    reuse: bool = True
    diagnostics: bool = False
    """Measure CPU and memory of the check (a /proc read per process after it)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer for one proof. `reply` is Lean's reply with positions in the user's file."""

    verdict: Verdict
    reply: Reply | None = None
    time_seconds: float = 0.0
    error: str = ""
    repl_id: str = ""
    queue_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_memory_bytes: int = 0
    attempts: int = 0
    fresh_repl: bool = False


def not_checked(reason: str) -> Outcome:
    return Outcome(Verdict.NOT_CHECKED, error=reason)


@dataclass(eq=False, slots=True)
class Job:
    """One proof on its way through the pool. Answered exactly once, through `future`."""

    split: Split
    options: CheckOptions
    future: asyncio.Future[Outcome]
    submitted: float = field(default_factory=time.monotonic)
    attempts: int = 0
    expiry: asyncio.TimerHandle | None = None
    retry_fresh: bool = False
    """Retried on a REPL started for it alone (its earlier REPL's history may be to blame)."""
    size: int = 0
    """Bytes of code it holds (the queue is bounded in bytes too)."""

    @property
    def key(self) -> PoolKey:
        return PoolKey(self.split.header, fresh=not self.options.reuse or self.retry_fresh)

    @property
    def abandoned(self) -> bool:
        """Nobody waits for the answer any more."""
        return self.future.cancelled()

    def answer(self, outcome: Outcome) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        if not self.future.done():
            self.future.set_result(outcome)


@dataclass(frozen=True, slots=True)
class PoolKey:
    """Which REPLs may run a job: those of its header; `fresh` ones are started for one job."""

    header: str
    fresh: bool = False
