"""The pool of warm REPLs: the `Supervisor` takes proofs in, hands each to a REPL of its header,
and answers it exactly once. Pure asyncio; no gRPC.

Every REPL is bound to one import header (its PoolKey). Jobs wait in one FIFO queue per key. The
scheduler, run after every change of state, gives each idle REPL the oldest job of its key; starts
REPLs while the pool has room; and, when the pool is full, converts an idle REPL of another header
only when the waiting work outweighs an import (with hysteresis). A REPL whose header still has work
leaves it only for a header with no REPL that starves (`policy.SwitchPolicy`: exhaustive service with
a starvation bound, so headers outnumbering REPLs do not thrash). A REPL whose
header still has work moves to the header that will drain last when that evens out the finish times
by more than an import's worth (8 REPLs over 3 equal headers start 3/3/2). Queued work is counted in
seconds with one mean proof cost; costs themselves are never guessed from the proof text. Warm
spares (`spare_repls`, placed by `policy.spare_plan`) wait beyond `max_repls` and take the place of
a REPL that is killed, crashes, is recycled or converted, so no proof waits for that import.

The rooms it wires, each one reason to change: queue.py (admission, bounds, expiry, cancellation),
scheduler.py (which REPL takes which job, applying policy.py's pure decisions), lifecycle.py (a
REPL's start, watch, replacement and retirement; readiness.py says whether the pool can serve), and
check.py (one job on one REPL). What is left here: the public API, and a job's way from its REPL to
its answer (retried, recycled, answered once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterable
from typing import Any

import structlog

from kimina_grpc.repl import Split, Verdict, decode
from kimina_grpc.supervisor.check import Checker
from kimina_grpc.supervisor.config import PoolSettings
from kimina_grpc.supervisor.jobs import CheckOptions, Job, Outcome, PoolKey, not_checked
from kimina_grpc.supervisor.lifecycle import Lifecycle
from kimina_grpc.supervisor.policy import used_up
from kimina_grpc.supervisor.queue import JobQueue, QueueFull, ShuttingDown, budget, size_of, too_short
from kimina_grpc.supervisor.readiness import Readiness
from kimina_grpc.supervisor.scheduler import Scheduler
from kimina_grpc.supervisor.state import Mean, PoolState, Totals, pool_state
from kimina_grpc.supervisor.trust import Reviewer
from kimina_grpc.supervisor.workers import Worker, WorkerState

__all__ = ["PoolSettings", "PoolState", "Supervisor"]

log = structlog.get_logger("kimina_grpc.supervisor")


class Supervisor:
    """The pool: the queue takes jobs in, the scheduler pairs them with REPLs, the lifecycle starts
    and retires those, the checker runs one job on one REPL; this class wires them, answers each
    job once (`_finish`) and owns the tasks they spawn (cancelled on `close`)."""

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self.totals = Totals()
        """What the pool has done since it started (imports, recycles, kills, crashes, completed, swaps)."""
        # The mean import time (read by the policy; a test may set it to make waiting worth it or not).
        self.import_cost = Mean(settings.import_cost_hint)
        # One mean proof cost over all headers: per-header means of heavy-tailed costs are too noisy
        # to move REPLs on.
        self.proof_cost = Mean(1.0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._draining = False
        # Jobs handed to a REPL and not answered yet (close() answers them whatever state they are in).
        self._running: set[Job] = set()
        self.queue = JobQueue(
            max_queue=settings.max_queue,
            max_queue_bytes=settings.max_queue_bytes,
            max_wait=settings.max_wait,
            min_timeout=settings.min_timeout,
            left=self._prune,
        )
        self.lifecycle = Lifecycle(
            settings,
            queue=self.queue,
            totals=self.totals,
            import_cost=self.import_cost,
            spawn=self._spawn,
            kick=self._kick,
            finish=self._finish,
            prune=self._prune,
            closing=lambda: self._closing,
        )
        self.readiness: Readiness = self.lifecycle.readiness
        self.scheduler = Scheduler(
            settings,
            queue=self.queue,
            lifecycle=self.lifecycle,
            import_cost=self.import_cost,
            proof_cost=self.proof_cost,
            run=self._run,
            closing=lambda: self._closing,
        )
        self.checker = Checker(
            max_repl_rss=settings.max_repl_rss,
            reviewer=Reviewer(
                settings.spec, import_timeout=settings.import_timeout, max_judges=settings.max_concurrent_imports
            ),
            spawn=self._spawn,
            measured=self.proof_cost.add,
        )

    # ----------------------------------------------------------------- public API

    async def start(self) -> None:
        """Begin pre-warming (LEAN_SERVER_INIT_REPLS); `ready` tells when it is done."""
        self.lifecycle.start()
        self._kick()

    @property
    def ready(self) -> bool:
        """Pre-warming is done and nothing keeps the pool from serving."""
        return self.readiness.ready

    @property
    def not_ready_reason(self) -> str:
        """Why `ready` is False ("" when it is True)."""
        return self.readiness.reason

    def warmup_progress(self) -> tuple[int, int]:
        return self.readiness.warmup_progress()

    def submit(self, split: Split, options: CheckOptions) -> Job:
        """Queue one proof; its outcome arrives on `job.future`."""
        return self.submit_many([(split, options)])[0]

    def submit_many(self, items: Iterable[tuple[Split, CheckOptions]]) -> list[Job]:
        """Queue proofs all or none: QueueFull if the queue cannot take them all."""
        if self._closing or self._draining:
            raise ShuttingDown
        batch = list(items)
        sizes = [size_of(split, options) for split, options in batch]
        if not self.queue.admits(sizes):
            raise QueueFull(retry_after=self._retry_after())
        loop = asyncio.get_running_loop()
        jobs = []
        min_timeout = self.settings.min_timeout
        for (split, options), size in zip(batch, sizes, strict=True):
            job = Job(split, options, loop.create_future(), size=size)
            jobs.append(job)
            if (left := budget(options, job.submitted)) < min_timeout:
                # Never queued: it would only make the pool start a REPL it cannot use.
                self._finish(job, not_checked(too_short(left, min_timeout, "when it came")))
                continue
            self.queue.push(job)
            self.queue.arm_expiry(job, self.settings.max_wait)
        self._kick()
        return jobs

    async def submit_when_room(self, split: Split, options: CheckOptions) -> Job:
        """Queue one proof, waiting while the queue is full (a stream's backpressure)."""
        await self.queue.wait_for_room(size_of(split, options), lambda: self._closing or self._draining)
        job = self.submit(split, options)
        self.queue.pass_room_on()
        return job

    def cancel(self, job: Job) -> None:
        """The caller is gone: a queued job never runs. A running one may finish within an import's
        worth of time (killing its REPL would cost an import anyway, and most proofs are short);
        past that its REPL is killed and replaced, so it no longer keeps others waiting."""
        if self.queue.remove(job) or not job.future.done():
            job.future.cancel()
        if job.expiry is not None:
            job.expiry.cancel()
        for worker in self.lifecycle.workers:
            if worker.job is job:
                ran = time.monotonic() - worker.job_started
                asyncio.get_running_loop().call_later(
                    max(0.0, self.import_cost.value - ran), self._stop_abandoned, worker, job
                )

    def _stop_abandoned(self, worker: Worker, job: Job) -> None:
        if worker.job is job and worker.stop is not None:
            worker.stop("abandoned")

    def state(self) -> PoolState:
        """The pool at a glance, bounded: at most 100 headers (busiest first), each cut to 200
        characters (headers are caller-chosen text)."""
        return pool_state(self.ready, self.queue, self.lifecycle.workers, self.totals)

    def workers(self) -> tuple[Worker, ...]:
        """The pool's REPLs now (spares included), to read: the pool alone changes them."""
        return tuple(self.lifecycle.workers)

    @property
    def queued(self) -> int:
        return self.queue.count

    @property
    def queued_bytes(self) -> int:
        return self.queue.bytes

    async def close(self) -> None:
        """Answer every queued and running job as not checked, kill every REPL, and wait for them."""
        self._closing = True
        self.readiness.close()
        self.lifecycle.stop_timers()
        self.queue.clear("the server is shutting down")
        self.queue.wake_all()  # waiting submitters learn of the shutdown
        for job in self._running:  # on a REPL, or between a lost REPL and its retry
            job.answer(not_checked("the server is shutting down"))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.lifecycle.retire_all()
        await decode.shutdown()

    async def drain(self, timeout: float) -> None:
        """Shutdown's first step: take no more work (submitters, also those waiting for room, get
        ShuttingDown), answer queued jobs as not checked, and give the running ones up to `timeout`
        seconds to finish with their verdicts. `close` answers what is left."""
        self._draining = True
        self.queue.wake_all()
        for key in self.queue.known_keys():
            for job in self.queue.drain(key):
                self._finish(job, not_checked("the server is shutting down"))
        running = {job.future for job in self._running if not job.future.done()}
        if running:
            await asyncio.wait(running, timeout=timeout)

    # ----------------------------------------------------------------- wiring

    def _kick(self) -> None:
        self.scheduler.kick()

    def _retry_after(self) -> float:
        busy = max(1, sum(1 for w in self.lifecycle.workers if w.state is WorkerState.BUSY))
        return min(60.0, max(1.0, self.queue.count * self.proof_cost.value / busy / 10))

    def _prune(self, key: PoolKey) -> None:
        """Forget a header that has no queued work and no REPL (headers are caller-chosen: kept
        forever, their bookkeeping would only grow)."""
        if not self.queue.length(key) and not self.lifecycle.uses(key):
            self.queue.forget(key)
            self.lifecycle.forget(key)
            self.scheduler.forget(key)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----------------------------------------------------------------- a job on a REPL

    def _run(self, worker: Worker, job: Job) -> None:
        worker.state = WorkerState.BUSY
        worker.job = job
        self._running.add(job)
        self._spawn(self._check(worker, job))

    async def _check(self, worker: Worker, job: Job) -> None:
        try:
            await self._check_once(worker, job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The last resort: whatever went wrong, the proof is answered and the REPL retired.
            log.exception("check_failed", repl_id=worker.id)
            self._finish(job, Outcome(Verdict.REPL_ERROR, error=f"internal error while checking: {exc!r}"[:1000]))
            await self.lifecycle.lost(worker)

    async def _check_once(self, worker: Worker, job: Job) -> None:
        assert worker.repl is not None
        if job.abandoned:  # its caller left between dispatch and now: nothing to run
            self._running.discard(job)
            self._after_check(worker, recycle=False)
            return
        left = budget(job.options, time.monotonic())
        min_timeout = self.settings.min_timeout
        if left < min_timeout:  # nothing is sent: the REPL stays warm and in step
            self._finish(job, not_checked(too_short(left, min_timeout, "when a REPL was free")))
            self._after_check(worker, recycle=False)
            return
        job.attempts += 1
        started = worker.job_started = time.monotonic()
        opts = job.options
        # No longer than the caller's deadline leaves: its call must get every answer in time.
        run_for = opts.timeout if opts.deadline is None else max(0.001, min(opts.timeout, opts.deadline - started))
        ended = await self.checker.run(worker, job, started, run_for)
        if ended.lost is not None:
            if ended.lost == "kills":
                self.totals.kills += 1
            else:
                self.totals.crashes += 1
            await self.lifecycle.lost(worker)
            if ended.may_retry and self._retry(job, ended.outcome, ended.history):
                return
            self._finish(job, ended.outcome)
            return
        self._finish(job, ended.outcome)
        self._after_check(worker, recycle=ended.recycle)

    def _after_check(self, worker: Worker, *, recycle: bool) -> None:
        if worker.key.fresh:
            self.lifecycle.release_fresh(worker)
        elif recycle or used_up(worker.uses, worker.max_uses):
            self.lifecycle.replace(worker, worker.key)
        else:
            worker.state = WorkerState.IDLE
            worker.idle_since = time.monotonic()
            worker.job = None
        self._kick()

    def _retry(self, job: Job, outcome: Outcome, history: bool) -> bool:
        """Try a proof once more when its failure may not be its own: a crash or a stopped REPL
        (on any REPL of its header), or memory exhausted on a REPL that had run other proofs first,
        or killed by something else (the kernel's OOM killer picks the largest process, not the
        guilty proof): on a REPL started for it alone, where only its own death is this proof's."""
        if job.attempts >= 2 or self._closing or job.future.done():
            return False  # never retry a proof nobody waits for
        if outcome.verdict is Verdict.OUT_OF_MEMORY:
            if not history:
                return False
            job.retry_fresh = True
        elif outcome.verdict is not Verdict.REPL_ERROR:
            return False
        if self._draining:  # another server will check it
            self._finish(job, not_checked("the server is shutting down"))
            return True
        self._running.discard(job)
        self.queue.push(job, first=True)
        self.queue.arm_expiry(job, 0.0)  # its caller's deadline still holds; the wait bound was met once
        self._kick()
        return True

    def _finish(self, job: Job, outcome: Outcome) -> None:
        self._running.discard(job)
        if self._closing and not job.future.done():
            outcome = not_checked("the server is shutting down")
        job.answer(outcome)
        self.totals.completed += 1
