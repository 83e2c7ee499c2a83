"""What the supervisor is given (a Job) and what it answers (an Outcome)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import Enum

from kimina_grpc.repl import InfotreeMode, Reply, Split, Verdict


class TrustLevel(Enum):
    """How much a VALID verdict vouches for (see supervisor/trust.py and the contract's TrustLevel)."""

    CHECK = 1
    AUDIT = 2
    JUDGE = 3


STANDARD_AXIOMS = frozenset({"propext", "Classical.choice", "Quot.sound"})


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """What a proof must also satisfy, beyond Lean's messages, to be VALID (audit and judge)."""

    level: TrustLevel
    theorem: str
    """The theorem that must be proved (fully qualified)."""
    statement: str | None = None
    """The reference statement (caller's Lean text, declaring `theorem`), or None for no statement check."""
    allowed_axioms: frozenset[str] = STANDARD_AXIOMS


@dataclass(frozen=True, slots=True)
class CheckOptions:
    timeout: float
    infotree: InfotreeMode | None = None
    all_tactics: bool = False
    reuse: bool = True
    diagnostics: bool = False
    """Measure CPU and memory of the check (a /proc read per process after it)."""
    trust: TrustPolicy | None = None
    """None: Lean's messages decide (trust level CHECK)."""
    cache: bool = True
    """Read by the cache layer in front of the pool (kimina_grpc/cache/), ignored by the pool."""
    deadline: float | None = None
    """The caller's deadline (time.monotonic()): a proof still queued then is answered NOT_CHECKED,
    and a running one gets no more than the time left, so the call gets every answer in time."""


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
    reason: str = ""
    """Why the trust policy rejected the proof (UNTRUSTED), naming the rule and the culprit."""
    axioms: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(theorem, its axioms) for each audited theorem."""
    from_cache: bool = False
    """Answered from the result cache: no Lean ran for this proof."""
    shared: bool = False
    """Answered by a check of an identical proof that another caller started (in-flight dedupe)."""
    review_seconds: float = 0.0
    """Wall seconds of the trust review (audit, judge) after Lean accepted the body; not part of
    `time_seconds`, which is Lean's time for the proof itself."""


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
