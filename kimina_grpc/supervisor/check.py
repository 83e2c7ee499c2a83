"""One job on one REPL: the check under its timeout and the memory watchdog, the trust review of a
VALID body, and how it ended (the outcome, and what the pool must do with the REPL: replace it,
recycle it, or keep it warm; whether the proof may be tried once more). The pool decides what
happens next (pool.py); this module only runs the check and reads its end."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from kimina_grpc.repl import (
    Repl,
    ReplCrashed,
    ReplyInvalid,
    ReplyRefused,
    ReplyTooLarge,
    ReplyTooSlow,
    Verdict,
    protocol,
    verdict_of,
)
from kimina_grpc.supervisor.jobs import CheckOptions, Job, Outcome, not_checked
from kimina_grpc.supervisor.trust import Reviewer
from kimina_grpc.supervisor.workers import Worker

# Lean's runtime prints this when an allocation fails (e.g. under RLIMIT_AS).
_OOM_MARKERS = ("out of memory", "std::bad_alloc", "memoryerror")
_WATCHDOG_PERIOD = 0.25


@dataclass(frozen=True, slots=True)
class Ended:
    """How a check ended."""

    outcome: Outcome
    lost: str | None = None
    """The REPL is gone ("kills": the server killed it; "crashes": it died): reap and replace it."""
    may_retry: bool = False
    """(When lost) the failure may not be the proof's own: the pool may try it once more."""
    history: bool = False
    """(When lost) the REPL had run other proofs before this one."""
    recycle: bool = False
    """(When not lost) the REPL's state is not trusted with the next proof: replace it."""


class Checker:
    """Runs one job on one warm REPL (see `run`)."""

    def __init__(
        self,
        *,
        max_repl_rss: int | None,
        reviewer: Reviewer,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        measured: Callable[[float], None],
    ) -> None:
        self.max_repl_rss = max_repl_rss
        self.reviewer = reviewer
        self._spawn = spawn
        self._measured = measured
        """Called with a checked proof's seconds (the pool's mean proof cost)."""

    async def run(self, worker: Worker, job: Job, started: float, run_for: float) -> Ended:
        """Check `job` on `worker`'s REPL, started at `started`, for at most `run_for` seconds."""
        repl = worker.repl
        assert repl is not None
        opts = job.options
        request = protocol.command(
            job.split.body, env=worker.base_env, all_tactics=opts.all_tactics, infotree=opts.infotree
        )
        loop = asyncio.get_running_loop()
        limit = self.max_repl_rss
        peak = 0
        killed_for: str | None = None
        answered_at: float | None = None
        watch: asyncio.TimerHandle | None = None

        def stop(reason: str) -> None:
            # The REPL cannot be interrupted: killing it makes its pending read fail at once. Once
            # it has answered, the time the reply takes to parse is not the proof's.
            nonlocal killed_for
            if killed_for is None and answered_at is None and repl.alive:  # not already dead of its own
                # A stopped (SIGSTOP) REPL times out every proof: not this proof's fault.
                killed_for = "stopped" if reason == "timeout" and repl.stopped() else reason
                self._spawn(repl.kill())

        def answered() -> None:
            nonlocal answered_at
            answered_at = time.monotonic()
            timer.cancel()

        def sample() -> None:
            nonlocal peak, watch
            if not repl.alive:
                return  # the check is over, one way or another
            rss = repl.rss()
            peak = max(peak, rss)
            if limit is not None and rss > limit:
                if worker.stop is not None:
                    worker.stop("memory")
            else:
                watch = loop.call_later(_WATCHDOG_PERIOD, sample)

        worker.stop = stop
        timer = loop.call_later(run_for, stop, "timeout")
        if limit is not None or opts.diagnostics:  # the peak of processes the proof starts shows only here
            watch = loop.call_later(_WATCHDOG_PERIOD, sample)
        crash: ReplCrashed | None = None
        refused: ReplyRefused | None = None
        try:
            reply, usage = await repl.run(
                request,
                measure=opts.diagnostics or limit is not None,
                shift=job.split.line_offset,
                answered=answered,
                deadline=started + run_for,  # reading the REPL's output is the proof's time too
            )
        except ReplCrashed as exc:
            crash = exc
        except ReplyRefused as exc:
            refused = exc
        finally:
            worker.stop = None
            timer.cancel()
        elapsed = (answered_at or time.monotonic()) - started
        made = functools.partial(
            Outcome,
            repl_id=worker.id,
            queue_seconds=started - job.submitted,
            attempts=job.attempts,
            fresh_repl=worker.key.fresh,
            time_seconds=elapsed,
        )
        if killed_for is not None or crash is not None:
            if watch is not None:
                watch.cancel()
            return Ended(
                self._lost_outcome(made, killed_for, crash, run_for, peak),
                lost="kills" if killed_for is not None else "crashes",
                # A reply past the bound is the proof's own: the same proof writes it again.
                may_retry=not isinstance(crash, ReplyTooLarge),
                history=worker.uses > 0 or sigkilled(crash),
            )
        if refused is not None:
            # The REPL answered and is still in step; only this reply cannot be handed on.
            if watch is not None:
                watch.cancel()
            worker.uses += 1
            # No honest REPL writes an invalid reply: its state is not trusted with the next proof.
            return Ended(_refused(made, refused, run_for), recycle=isinstance(refused, ReplyInvalid))
        self._measured(elapsed)
        worker.uses += 1
        verdict = verdict_of(reply)
        outcome = made(
            verdict,
            reply,
            error=f"the REPL answered: {reply.error}" if reply.error is not None else "",
            cpu_seconds=usage.cpu_seconds,
            peak_memory_bytes=max(peak, usage.peak_bytes),
        )
        recycle = reply.error is not None  # a REPL-level failure: don't trust its state
        if opts.trust is not None and verdict is Verdict.VALID and reply.env is not None:
            outcome, recycle = await self._review(worker, repl, outcome, reply.env, opts)
        if watch is not None:
            watch.cancel()
        return Ended(
            outcome,
            recycle=recycle
            or not repl.alive  # killed or crashed during the trust review
            or (limit is not None and max(usage.rss_bytes, repl.rss()) > limit),
        )

    def _lost_outcome(
        self,
        made: Callable[..., Outcome],
        killed_for: str | None,
        crash: ReplCrashed | None,
        run_for: float,
        peak: int,
    ) -> Outcome:
        if killed_for == "timeout":
            return made(
                Verdict.TIMEOUT, error=f"the proof ran past its timeout of {run_for:g} s", peak_memory_bytes=peak
            )
        if killed_for == "memory":
            return self._out_of_memory(made, peak)
        if killed_for == "abandoned":
            return not_checked("the caller went away; the proof was stopped")
        if killed_for == "stopped":
            return made(Verdict.REPL_ERROR, error="the REPL was stopped (SIGSTOP) and did not answer")
        assert crash is not None
        why = "; killed by a SIGKILL the server did not send (most likely the kernel's OOM killer)"
        return made(crash_verdict(crash), error=str(crash) + (why if sigkilled(crash) else ""))

    async def _review(
        self, worker: Worker, repl: Repl, outcome: Outcome, env: int, opts: CheckOptions
    ) -> tuple[Outcome, bool]:
        """The trust review of a VALID body, as a task its caller's departure or the memory
        watchdog stops (the judge's REPL with it). Returns the final outcome and whether the REPL
        must be recycled (a review stopped midway leaves a reply in flight)."""
        assert opts.trust is not None
        reviewed = time.monotonic()
        review = asyncio.ensure_future(
            self.reviewer.review(
                repl,
                outcome,
                env=env,
                base_env=worker.base_env,
                policy=opts.trust,
                timeout=opts.timeout,
                header=worker.key.header,
            )
        )
        why: list[str] = []

        def stop(reason: str) -> None:
            if not why:
                why.append(reason)
                review.cancel()

        worker.stop = stop
        try:
            outcome = await asyncio.shield(review)
        except asyncio.CancelledError:
            if not review.done():  # this task itself was cancelled (shutdown): take the review along
                review.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await review  # its clean-up (the judge's REPL, the pickle) runs to its end
                raise
            if not why:
                raise
            if why[0] == "memory":
                oom = functools.partial(replace, outcome, reply=None)
                outcome = self._out_of_memory(oom, outcome.peak_memory_bytes)
            else:
                outcome = not_checked("the caller went away; the proof's trust review was stopped")
            return outcome, True
        finally:
            worker.stop = None
        return replace(outcome, review_seconds=time.monotonic() - reviewed), False

    def _out_of_memory(self, made: Callable[..., Outcome], peak: int) -> Outcome:
        return made(
            Verdict.OUT_OF_MEMORY,
            peak_memory_bytes=peak,
            error=f"the REPL's resident memory passed {self.max_repl_rss} bytes",
        )


def _refused(made: Callable[..., Outcome], exc: ReplyRefused, run_for: float) -> Outcome:
    """The outcome of a proof whose reply the REPL wrote but the server cannot hand on."""
    if isinstance(exc, ReplyTooSlow):
        return made(Verdict.TIMEOUT, error=f"{exc} of {run_for:g} s")
    if isinstance(exc, ReplyInvalid):
        return made(Verdict.REPL_ERROR, error=f"the REPL's reply cannot be represented: {exc}")
    return made(Verdict.REPL_ERROR, error=f"{exc}; ask for a smaller infotree mode")


def crash_verdict(exc: BaseException) -> Verdict:
    """OUT_OF_MEMORY when Lean's runtime said so, or when something else SIGKILLed the REPL (the
    server did not: that is a kill, not a crash): on Linux, the kernel's out-of-memory killer, which
    leaves no last words. Retried on a fresh REPL when the REPL had run earlier proofs."""
    text = (str(exc) or "").lower()
    return Verdict.OUT_OF_MEMORY if sigkilled(exc) or any(m in text for m in _OOM_MARKERS) else Verdict.REPL_ERROR


def sigkilled(exc: BaseException | None) -> bool:
    """Whether the REPL died of a SIGKILL the server did not send (its wrapper reports it as 137)."""
    return isinstance(exc, ReplCrashed) and exc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)
