"""The pool of warm REPLs and the scheduler that feeds them. Pure asyncio; no gRPC.

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
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import psutil
import structlog

from kimina_grpc.repl import (
    Repl,
    ReplCrashed,
    ReplSpec,
    Reply,
    ReplyRefused,
    Split,
    Verdict,
    decode,
    protocol,
    split_header,
    verdict_of,
)
from kimina_grpc.supervisor.check import Checker, crash_verdict
from kimina_grpc.supervisor.jobs import CheckOptions, Job, Outcome, PoolKey, not_checked
from kimina_grpc.supervisor.policy import (
    Idle,
    Snapshot,
    SwitchPolicy,
    Waiting,
    expires_soon,
    move_target,
    neediest,
    spare_plan,
    use_limit,
    used_up,
    worth_converting,
)
from kimina_grpc.supervisor.queue import JobQueue, QueueFull, ShuttingDown, budget, size_of, too_short
from kimina_grpc.supervisor.readiness import Readiness
from kimina_grpc.supervisor.trust import Reviewer
from kimina_grpc.supervisor.workers import Worker, WorkerState

log = structlog.get_logger("kimina_grpc.supervisor")

# Idle REPLs are looked at this often: one that died (the OOM killer picks the largest process,
# often an idle Mathlib REPL) or was stopped is replaced before a proof is sent to it.
_SWEEP_PERIOD = 1.0
# GetServerInfo's view is bounded: headers are caller-chosen text.
_STATE_HEADERS = 100
_STATE_HEADER_CHARS = 200


@dataclass(frozen=True, slots=True)
class PoolSettings:
    spec: ReplSpec
    max_repls: int = 1
    max_repl_uses: int = 0
    max_repl_uses_jitter: int = 0
    """Each REPL's own limit is `max_repl_uses` less a random draw in [0, this] (`policy.use_limit`)."""
    seed: int | None = None
    """Seeds the pool's random draws (the use-limit jitter): tests and benchmarks; None: unpredictable."""
    max_repl_rss: int | None = None
    max_wait: float = 0.0
    max_queue: int = 100_000
    max_queue_bytes: int = 0
    """Bytes of code queued at most, over all callers (0 = no bound)."""
    max_concurrent_imports: int = 2
    min_free_memory: int | None = None
    import_timeout: float = 1800.0
    import_cost_hint: float = 15.0
    init_repls: dict[str, int] = field(default_factory=dict)
    min_timeout: float = 0.1
    spare_repls: int = 0
    """Warm REPLs beyond `max_repls`, kept imported for the headers in use: a REPL killed, crashed
    or recycled is replaced by one at once (see `policy.spare_plan`). They never run a proof while
    they are spares: `max_repls` still bounds the checks running at once."""
    """A proof whose budget (its timeout, or what its caller's deadline leaves) is below this is
    answered NOT_CHECKED without a REPL: a check cut that short only kills a warm REPL."""


@dataclass(frozen=True, slots=True)
class HeaderStats:
    header: str
    warm: int
    busy: int
    starting: int
    queued: int
    spares: int = 0
    """Warm spares ready to take over (one still importing is counted in `starting`)."""


@dataclass(frozen=True, slots=True)
class PoolState:
    ready: bool
    queued: int
    headers: tuple[HeaderStats, ...]
    imports: int
    recycles: int
    kills: int
    crashes: int
    completed: int
    warm_swaps: int = 0
    """REPLs replaced (killed, crashed, recycled, converted) by a warm spare: no import waited on."""
    cold_swaps: int = 0
    """REPLs replaced by a new process that had to import first, or by a spare still importing."""


class Mean:
    """A running mean that starts from a guess (proof costs are heavy-tailed: no EMA)."""

    def __init__(self, initial: float) -> None:
        self.value = initial
        self.count = 0

    def add(self, x: float) -> None:
        self.count += 1
        self.value = x if self.count == 1 else self.value + (x - self.value) / self.count


class Supervisor:
    def __init__(self, settings: PoolSettings) -> None:
        self.s = settings
        self.queue = JobQueue(
            max_queue=settings.max_queue,
            max_queue_bytes=settings.max_queue_bytes,
            max_wait=settings.max_wait,
            min_timeout=settings.min_timeout,
            left=self._prune,
        )
        self._workers: set[Worker] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._importing = 0
        # The mean import time (read by the policy; a test may set it to make waiting worth it or not).
        self.import_cost = Mean(settings.import_cost_hint)
        # One mean proof cost over all headers: per-header means of heavy-tailed costs are too noisy
        # to move REPLs on.
        self._proof_cost = Mean(1.0)
        self._import_failures: dict[PoolKey, int] = {}
        self._policy = SwitchPolicy()
        self._rng = random.Random(settings.seed)
        # When a proof of each header last started on a REPL: a header's wait for a switch counts from it.
        self._served: dict[PoolKey, float] = {}
        self._kick_pending = False
        self._closing = False
        self._draining = False
        self.readiness = Readiness(retry=self._start_again, closing=lambda: self._closing)
        self._memory_retry: asyncio.TimerHandle | None = None
        # REPLs to start as soon as the pool has room and the import bound allows: pre-warm, then
        # replacements of REPLs that died or were recycled.
        self._to_start: list[PoolKey] = []
        # Jobs handed to a REPL and not answered yet (close() answers them whatever state they are in).
        self._running: set[Job] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.counters = {
            "imports": 0,
            "recycles": 0,
            "kills": 0,
            "crashes": 0,
            "completed": 0,
            "warm_swaps": 0,
            "cold_swaps": 0,
        }
        self.checker = Checker(
            max_repl_rss=settings.max_repl_rss,
            reviewer=Reviewer(
                settings.spec, import_timeout=settings.import_timeout, max_judges=settings.max_concurrent_imports
            ),
            spawn=self._spawn,
            measured=self._proof_cost.add,
        )

    # ----------------------------------------------------------------- public API

    async def start(self) -> None:
        """Begin pre-warming (LEAN_SERVER_INIT_REPLS); `ready` tells when it is done."""
        for header, count in self.s.init_repls.items():
            key = PoolKey(split_header(header).header)
            self._to_start.extend([key] * count)
        del self._to_start[self.s.max_repls :]
        # Pre-warming counts the spares the plan gives the pre-warmed headers: the server is ready
        # once they are warm too (a kill or recycle right after it is served warm).
        prewarm = {k: self._to_start.count(k) for k in self._to_start}
        self.readiness.warmup_total = len(self._to_start) + len(spare_plan(self.s.spare_repls, prewarm, {}, {})[0])
        self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_PERIOD, self._sweep)
        if not self._to_start:
            self.readiness.probing = True
            self._spawn(self._probe_repl())
        self._kick()

    async def _probe_repl(self) -> None:
        await self.readiness.probe(self.s.spec, self.s.import_timeout)
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
        for (split, options), size in zip(batch, sizes, strict=True):
            job = Job(split, options, loop.create_future(), size=size)
            jobs.append(job)
            if (left := budget(options, job.submitted)) < self.s.min_timeout:
                # Never queued: it would only make the pool start a REPL it cannot use.
                self._finish(job, not_checked(too_short(left, self.s.min_timeout, "when it came")))
                continue
            self.queue.push(job)
            self.queue.arm_expiry(job, self.s.max_wait)
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
        for worker in self._workers:
            if worker.job is job:
                ran = time.monotonic() - worker.idle_since
                asyncio.get_running_loop().call_later(
                    max(0.0, self.import_cost.value - ran), self._stop_abandoned, worker, job
                )

    def _stop_abandoned(self, worker: Worker, job: Job) -> None:
        if worker.job is job and worker.stop is not None:
            worker.stop("abandoned")

    def state(self) -> PoolState:
        """The pool at a glance, bounded: at most 100 headers (busiest first), each cut to 200
        characters (headers are caller-chosen text)."""
        workers = self._worker_counts()
        keys = sorted(
            self.queue.known_keys() | set(workers),
            key=lambda k: (-(workers.get(k, 0) + self.queue.length(k)), k.header, k.fresh),
        )[:_STATE_HEADERS]
        stats = []
        for key in sorted(keys, key=lambda k: (k.header, k.fresh)):
            ws = [w for w in self._workers if w.key == key]
            header = key.header if len(key.header) <= _STATE_HEADER_CHARS else key.header[:_STATE_HEADER_CHARS] + "…"
            stats.append(
                HeaderStats(
                    header=header + (" (fresh)" if key.fresh else ""),
                    warm=sum(w.state is WorkerState.IDLE and not w.spare for w in ws),
                    busy=sum(w.state is WorkerState.BUSY for w in ws),
                    starting=sum(w.state is WorkerState.STARTING for w in ws),
                    queued=self.queue.length(key),
                    # Ready to take over; a spare still importing counts as starting.
                    spares=sum(w.state is WorkerState.IDLE and w.spare for w in ws),
                )
            )
        return PoolState(self.ready, self.queue.count, tuple(stats), **self.counters)

    def workers(self) -> tuple[Worker, ...]:
        """The pool's REPLs now (spares included), to read: the pool alone changes them."""
        return tuple(self._workers)

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
        for timer in (self._memory_retry, self._sweeper):
            if timer is not None:
                timer.cancel()
        self.queue.clear("the server is shutting down")
        self.queue.wake_all()  # waiting submitters learn of the shutdown
        for job in self._running:  # on a REPL, or between a lost REPL and its retry
            job.answer(not_checked("the server is shutting down"))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(self._retire(w, counter=None) for w in list(self._workers)), return_exceptions=True)
        await decode.shutdown()

    async def drain(self, timeout: float) -> None:
        """Shutdown's first step: take no more work (submitters, also those waiting for room, get
        ShuttingDown), answer queued jobs as not checked, and give the running ones up to `timeout`
        seconds to finish with their verdicts. `close` answers what is left."""
        self._draining = True
        self.queue.wake_all()
        for key in self.queue.known_keys():
            self._fail_queue(key, not_checked("the server is shutting down"))
        running = {job.future for job in self._running if not job.future.done()}
        if running:
            await asyncio.wait(running, timeout=timeout)

    # ----------------------------------------------------------------- scheduling

    def _kick(self) -> None:
        if not self._kick_pending and not self._closing:
            self._kick_pending = True
            asyncio.get_running_loop().call_soon(self._schedule)

    def _schedule(self) -> None:
        self._kick_pending = False
        if self._closing:
            return
        now = time.monotonic()
        while (
            self._to_start
            and self._working() < self.s.max_repls
            and self._importing < self.s.max_concurrent_imports
            and self._memory_ok()
        ):
            worker = self._new_worker(self._to_start.pop(0))
            if len(self.readiness.warmup) < self.readiness.warmup_total:
                self.readiness.warmup.append(worker)
        idle = [w for w in self._workers if w.state is WorkerState.IDLE and not w.spare]
        switches: dict[str, PoolKey] = {}
        if self._working() >= self.s.max_repls:
            switches = {s.repl: s.to for s in self._policy.switches(self._snapshot(now, idle))}
        # 1. Idle REPLs take the oldest job of their key, unless the policy moves them to a key
        #    with no REPL at all that starves.
        for worker in idle:
            queue = self.queue.length(worker.key)
            if worker.key.fresh and not queue:
                # Started for one proof that was cancelled or expired while it imported.
                self._release_fresh(worker)
                self._kick()
            elif (to := switches.get(worker.id)) is not None:
                self._replace(worker, to)
            elif queue and self._importing < self.s.max_concurrent_imports and (key := self._move_target(worker)):
                self._replace(worker, key)
            elif queue:
                self._run(worker, self.queue.pop(worker.key))
        waiting = [(q[0].submitted, key) for key, q in self.queue.waiting()]
        if not waiting:
            self._place_spares()
            return
        waiting.sort(key=lambda x: x[0])  # oldest first: no key starves
        # 2. Start REPLs while the pool has room, for the keys that need them most.
        while (
            self._working() < self.s.max_repls
            and self._importing < self.s.max_concurrent_imports
            and (key := self._neediest([k for _, k in waiting])) is not None
            and self._memory_ok()
        ):
            self._new_worker(key)
        # 3. The pool is full: convert idle REPLs of other keys where the wait outweighs an import.
        if self._working() >= self.s.max_repls:
            for _, key in waiting:
                if self._importing >= self.s.max_concurrent_imports:
                    break
                victim = self._conversion_victim(key)
                if victim is not None:
                    self._replace(victim, key)
        self._place_spares()

    def _place_spares(self) -> None:
        """Start and retire spares as `policy.spare_plan` says; they import only after the working
        REPLs' own starts (they wait for import slots the working set does not need)."""
        if not self.s.spare_repls and not any(w.spare for w in self._workers):
            return
        spares: dict[PoolKey, int] = {}
        for w in self._workers:
            if w.spare:
                spares[w.key] = spares.get(w.key, 0) + 1
        queued = {k: len(q) for k, q in self.queue.waiting()}
        expiring: dict[PoolKey, int] = {}
        if self.s.max_repl_uses:
            # Within an import's worth of proofs of the limit: its successor is started ahead.
            ahead = self._ahead()
            for w in self._workers:
                if not w.spare and not w.key.fresh and expires_soon(w.uses, w.max_uses, ahead):
                    expiring[w.key] = expiring.get(w.key, 0) + 1
        working = self._worker_counts()
        for w in self._workers:
            if w.returns is not None:  # lent to a reuse=false proof: its header is still in use
                working[w.returns] = working.get(w.returns, 0) + 1
        start, retire = spare_plan(self.s.spare_repls, working, queued, spares, expiring)
        for key in retire:
            idle = [w for w in self._workers if w.spare and w.key == key and w.state is WorkerState.IDLE]
            if idle:
                self._workers.discard(idle[0])
                self._spawn(self._retire(idle[0], counter=None))
        for key in start:
            if self._to_start or self._importing >= self.s.max_concurrent_imports or not self._memory_ok():
                break
            spare = self._new_worker(key)
            spare.spare = True
            if len(self.readiness.warmup) < self.readiness.warmup_total:
                self.readiness.warmup.append(spare)

    def _ahead(self) -> int:
        """Proofs before MAX_REPL_USES within which a REPL's successor is made ready: an import's worth."""
        return max(1, math.ceil(self.import_cost.value / max(self._proof_cost.value, 1e-3)))

    def _working(self) -> int:
        """REPLs that count toward MAX_REPLS (all but the spares)."""
        return sum(not w.spare for w in self._workers)

    def _take_spare(self, key: PoolKey) -> bool:
        """Put a warm spare of `key` to work in the place of a REPL that went (its own successor
        is started by `_place_spares`); else one still importing (the slot waits for the rest of
        its import, not a whole one: a cold swap all the same); False if there is none."""
        spares = [w for w in self._workers if w.spare and w.key == key and w.state is not WorkerState.GONE]
        spare = min(spares, key=lambda w: (w.state is not WorkerState.IDLE, w.id), default=None)
        if spare is None or spare.state is not WorkerState.IDLE:
            self.counters["cold_swaps"] += 1
            if spare is None:
                return False
        spare.spare = False
        if spare.state is not WorkerState.IDLE:
            return True
        spare.warm_since = time.monotonic()
        self.counters["warm_swaps"] += 1
        return True

    def _snapshot(self, now: float, idle: list[Worker]) -> Snapshot:
        counts = self._worker_counts()
        return Snapshot(
            now=now,
            import_cost=self.import_cost.value,
            proof_cost=self._proof_cost.value,
            max_wait=self.s.max_wait,
            import_slots=self.s.max_concurrent_imports - self._importing,
            waiting=tuple(
                Waiting(key, q[0].submitted, counts.get(key, 0), self._served.get(key))
                for key, q in self.queue.waiting()
            ),
            idle=tuple(
                Idle(w.id, w.key, self.queue.length(w.key), counts[w.key], w.idle_since, w.warm_since) for w in idle
            ),
        )

    def _neediest(self, keys: list[PoolKey]) -> PoolKey | None:
        starting = {key: self._starting_for(key) for key in keys}
        return neediest(keys, {key: self.queue.length(key) for key in keys}, self._worker_counts(), starting)

    def _worker_counts(self) -> dict[PoolKey, int]:
        counts: dict[PoolKey, int] = {}
        for w in self._workers:
            if not w.spare:
                counts[w.key] = counts.get(w.key, 0) + 1
        return counts

    def _starting_for(self, key: PoolKey) -> int:
        return sum(1 for w in self._workers if w.key == key and w.state is WorkerState.STARTING and not w.spare)

    def _conversion_victim(self, key: PoolKey) -> Worker | None:
        idle = [
            w
            for w in self._workers
            if w.state is WorkerState.IDLE and not w.spare and w.key != key and not self.queue.length(w.key)
        ]
        if not idle:
            return None
        if not worth_converting(self._backlog(key), self._worker_counts().get(key, 0), self.import_cost.value):
            return None
        return min(idle, key=lambda w: w.idle_since)  # the one idle longest

    def _move_target(self, worker: Worker) -> PoolKey | None:
        """Where an idle REPL whose header still has work moves (`policy.move_target`), if anywhere."""
        backlogs = {key: self._backlog(key) for key, _ in self.queue.waiting()}
        return move_target(worker.key, backlogs, self._worker_counts(), self.import_cost.value)

    def _backlog(self, key: PoolKey) -> float:
        """Estimated seconds of queued work for `key`."""
        return self.queue.length(key) * self._proof_cost.value

    def _memory_ok(self) -> bool:
        need = self.s.min_free_memory
        if not need or psutil.virtual_memory().available >= need:
            return True
        if self._memory_retry is None:
            log.warning("memory_low_waiting", available=psutil.virtual_memory().available, needed=need)

            def retry() -> None:
                self._memory_retry = None
                self._kick()

            self._memory_retry = asyncio.get_running_loop().call_later(1.0, retry)
        return False

    def _retry_after(self) -> float:
        busy = max(1, sum(1 for w in self._workers if w.state is WorkerState.BUSY))
        per_proof = self._proof_cost.value
        return min(60.0, max(1.0, self.queue.count * per_proof / busy / 10))

    def _prune(self, key: PoolKey) -> None:
        """Forget a header that has no queued work and no REPL (headers are caller-chosen: kept
        forever, their bookkeeping would only grow)."""
        if not self.queue.length(key) and all(w.key != key for w in self._workers):
            self.queue.forget(key)
            self._import_failures.pop(key, None)
            self._served.pop(key, None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----------------------------------------------------------------- REPL lifecycle

    def _new_worker(self, key: PoolKey) -> Worker:
        limit = use_limit(self.s.max_repl_uses, self.s.max_repl_uses_jitter, self._rng)
        worker = Worker(key, f"repl-{next(self._ids)}", max_uses=limit)
        self._workers.add(worker)
        self._importing += 1
        self._spawn(self._start_worker(worker))
        return worker

    def _replace(self, worker: Worker, key: PoolKey) -> None:
        """Retire `worker` and start one for `key` in its place (a REPL for one proof gives the
        place back when it is done: the pool keeps its strength)."""
        self._workers.discard(worker)
        self._spawn(self._retire(worker, counter="recycles"))
        if not self._closing and not (not key.fresh and self._take_spare(key)):
            new = self._new_worker(key)
            if key.fresh and not worker.key.fresh:
                new.returns = worker.key

    async def _retire(self, worker: Worker, counter: str | None) -> None:
        worker.state = WorkerState.GONE
        self._workers.discard(worker)
        self._prune(worker.key)
        if counter:
            self.counters[counter] += 1
        if worker.repl is not None:
            await worker.repl.kill()

    async def _start_worker(self, worker: Worker) -> None:
        started = time.monotonic()
        try:
            worker.repl = await Repl.start(self.s.spec, worker.id)
            reply, _ = await asyncio.wait_for(
                worker.repl.run(protocol.command(worker.key.header), measure=False), self.s.import_timeout
            )
        except (ReplCrashed, ReplyRefused, TimeoutError) as exc:
            self._importing -= 1
            await self._import_failed(worker, exc)
            return
        except asyncio.CancelledError:
            self._importing -= 1
            await self._retire(worker, counter=None)
            raise
        except Exception as exc:  # the last resort: an unexpected failure is a failed start
            log.exception("repl_start_error", repl_id=worker.id)
            self._importing -= 1
            await self._import_failed(worker, exc)
            return
        self._importing -= 1
        try:
            await self._started(worker, reply, started)
        except Exception as exc:
            log.exception("repl_start_error", repl_id=worker.id)
            await self._import_failed(worker, exc)

    async def _started(self, worker: Worker, reply: Reply, started: float) -> None:
        """The header command was answered: make the REPL warm, or reject the header."""
        assert worker.repl is not None
        self.counters["imports"] += 1
        if verdict_of(reply) is not Verdict.VALID or reply.env is None:
            # Only imports are sent as a header, so Lean should say nothing; an error or a sorry
            # means this environment must never be a warm REPL's base (it would be unchecked).
            await self._header_rejected(worker, reply)
            return
        self.import_cost.add(time.monotonic() - started)
        self._import_failures.pop(worker.key, None)
        self.readiness.started(worker.key)
        await worker.repl.settle()
        worker.base_env = reply.env
        worker.state = WorkerState.IDLE
        worker.idle_since = worker.warm_since = time.monotonic()
        self._spawn(self._watch(worker))
        log.debug("repl_ready", repl_id=worker.id, header=worker.key.header, seconds=time.monotonic() - started)
        self._kick()

    async def _watch(self, worker: Worker) -> None:
        """Notice a REPL that dies while idle: replace it before a proof is sent to it."""
        assert worker.repl is not None
        await worker.repl.wait()
        if worker.state is WorkerState.IDLE:
            log.warning("repl_died_idle", repl_id=worker.id, header=worker.key.header)
            self.counters["crashes"] += 1
            await self._lost(worker)

    def _sweep(self) -> None:
        """Replace idle REPLs that were stopped (SIGSTOP): they would time out an innocent proof.
        Kill importing ones that were: their start fails now (and is tried again), not after the
        import timeout, with the header's proofs waiting all that time."""
        self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_PERIOD, self._sweep)
        for worker in [w for w in self._workers if w.state in (WorkerState.IDLE, WorkerState.STARTING)]:
            if worker.repl is None or not worker.repl.stopped():
                continue
            if worker.state is WorkerState.STARTING:
                log.warning("repl_stopped_importing", repl_id=worker.id, header=worker.key.header)
                self._spawn(worker.repl.kill())
                continue
            log.warning("repl_stopped_idle", repl_id=worker.id, header=worker.key.header)
            worker.state = WorkerState.GONE
            self.counters["crashes"] += 1
            self._spawn(self._lost(worker))

    def _start_again(self, key: PoolKey) -> None:
        """Readiness's background retry: start a REPL for `key` unless one is on its way."""
        if key not in self._to_start and not any(
            w.key == key and w.state is WorkerState.STARTING for w in self._workers
        ):
            self._to_start.append(key)
            self._kick()

    async def _import_failed(self, worker: Worker, exc: BaseException) -> None:
        self.counters["crashes"] += 1
        await self._retire(worker, counter=None)
        failures = self._import_failures[worker.key] = self._import_failures.get(worker.key, 0) + 1
        error = (str(exc) or repr(exc))[:500]
        log.warning("repl_start_failed", repl_id=worker.id, header=worker.key.header, error=error)
        if worker.repl is None or not worker.key.header:
            # The configured REPL cannot be started, or dies before it has imported nothing at all:
            # nothing will work until that is fixed.
            self.readiness.set_problem(None, f"{exc} (command: {' '.join(self.s.spec.argv)}; cwd: {self.s.spec.cwd})")
        elif worker in self.readiness.warmup:
            self.readiness.set_problem(worker.key, f"pre-warm header {worker.key.header!r} failed: {exc}")
        if failures >= 2 or worker.repl is None:
            # The header kills every REPL that imports it: answer its waiting proofs instead of looping.
            self._import_failures.pop(worker.key, None)
            if isinstance(exc, TimeoutError):
                outcome = Outcome(Verdict.TIMEOUT, error=f"importing the header took over {self.s.import_timeout:g} s")
            else:
                outcome = Outcome(crash_verdict(exc), error=f"the REPL failed while importing the header: {exc}")
            self._fail_queue(worker.key, outcome)
        self._kick()

    async def _header_rejected(self, worker: Worker, reply: Reply) -> None:
        """Lean did not accept the imports: every proof of this header gets Lean's verdict and
        messages on the user's import lines; the REPL is never used."""
        await self._retire(worker, counter=None)
        verdict = verdict_of(reply)
        if verdict is Verdict.VALID:  # no env: not a reply to a command
            verdict = Verdict.REPL_ERROR
        error = f"the REPL answered: {reply.error}" if reply.error is not None else "Lean did not accept the header"
        if worker in self.readiness.warmup:
            text = "; ".join(m.data for m in reply.messages)[:500] or error
            self.readiness.set_problem(worker.key, f"pre-warm header {worker.key.header!r} failed: {text}")
        for job in self.queue.drain(worker.key):
            job.answer(Outcome(verdict, _header_reply_in_file(reply, job.split), error=error, repl_id=worker.id))
            self.counters["completed"] += 1
        self._kick()

    def _fail_queue(self, key: PoolKey, outcome: Outcome) -> None:
        for job in self.queue.drain(key):
            job.answer(outcome)
            self.counters["completed"] += 1

    def _run(self, worker: Worker, job: Job) -> None:
        worker.state = WorkerState.BUSY
        worker.job = job
        self._served[worker.key] = time.monotonic()
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
            await self._lost(worker)

    async def _check_once(self, worker: Worker, job: Job) -> None:
        assert worker.repl is not None
        if job.abandoned:  # its caller left between dispatch and now: nothing to run
            self._running.discard(job)
            self._after_check(worker, recycle=False)
            return
        left = budget(job.options, time.monotonic())
        if left < self.s.min_timeout:  # nothing is sent: the REPL stays warm and in step
            self._finish(job, not_checked(too_short(left, self.s.min_timeout, "when a REPL was free")))
            self._after_check(worker, recycle=False)
            return
        job.attempts += 1
        started = time.monotonic()
        worker.idle_since = started  # cancel() reads how long the job has run from it
        opts = job.options
        # No longer than the caller's deadline leaves: its call must get every answer in time.
        run_for = opts.timeout if opts.deadline is None else max(0.001, min(opts.timeout, opts.deadline - started))
        ended = await self.checker.run(worker, job, started, run_for)
        if ended.lost is not None:
            self.counters[ended.lost] += 1
            await self._lost(worker)
            if ended.may_retry and self._retry(job, ended.outcome, ended.history):
                return
            self._finish(job, ended.outcome)
            return
        self._finish(job, ended.outcome)
        self._after_check(worker, recycle=ended.recycle)

    def _after_check(self, worker: Worker, *, recycle: bool) -> None:
        if worker.key.fresh:
            self._release_fresh(worker)
        elif recycle or used_up(worker.uses, worker.max_uses):
            self._replace(worker, worker.key)
        else:
            worker.state = WorkerState.IDLE
            worker.idle_since = time.monotonic()
            worker.job = None
        self._kick()

    def _release_fresh(self, worker: Worker) -> None:
        """A REPL started for one proof is done with it (or its proof went first): it goes, and the
        pool REPL it stood in for comes back."""
        worker.state = WorkerState.GONE
        self._workers.discard(worker)
        self._spawn(self._retire(worker, counter=None))
        if worker.returns is not None and not self._closing and not self._take_spare(worker.returns):
            self._to_start.append(worker.returns)

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
        self.counters["completed"] += 1

    async def _lost(self, worker: Worker) -> None:
        """A REPL died or was killed: reap it and start its replacement in the background."""
        await self._retire(worker, counter=None)
        key = worker.returns if worker.key.fresh else worker.key
        if not self._closing and not worker.spare and key is not None and not self._take_spare(key):
            self._to_start.append(key)
        self._kick()


def _header_reply_in_file(reply: Reply, split: Split) -> Reply:
    """Move the header command's messages onto the user's import lines and columns (the header
    sent is the normalised one: each of its lines is one import of the file)."""

    def pos(p: protocol.Pos) -> protocol.Pos:
        if 1 <= p.line <= len(split.header_lines):
            return protocol.Pos(split.header_lines[p.line - 1], split.header_columns[p.line - 1] + p.column)
        return p

    return replace(
        reply,
        messages=tuple(replace(m, pos=pos(m.pos), end_pos=m.end_pos and pos(m.end_pos)) for m in reply.messages),
        sorries=(),
    )
