"""The pool's REPLs and their lives: start one for a header (import, settle, warm), watch it while
it is idle (a death, a SIGSTOP), replace, recycle or retire it, swap a warm spare in for one that
went, and wait for memory (memory_gate.py) before a start. When a header's proofs are answered
because its import fails or Lean rejects it is decided here too (what they get: header_failure.py).
Which REPL goes where is the scheduler's (scheduler.py); this module only carries it out."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from kimina_grpc.repl import Repl, ReplCrashed, Reply, ReplyRefused, Verdict, protocol, verdict_of
from kimina_grpc.supervisor.config import PoolSettings
from kimina_grpc.supervisor.header_failure import Rejected, import_failed
from kimina_grpc.supervisor.jobs import Job, Outcome, PoolKey
from kimina_grpc.supervisor.memory_gate import MemoryGate
from kimina_grpc.supervisor.policy import use_limit
from kimina_grpc.supervisor.queue import JobQueue
from kimina_grpc.supervisor.readiness import Readiness
from kimina_grpc.supervisor.start_backoff import StartBackoff
from kimina_grpc.supervisor.state import Mean, Totals
from kimina_grpc.supervisor.workers import Worker, WorkerState, working_counts

log = structlog.get_logger("kimina_grpc.supervisor")

# Idle REPLs are looked at this often: one that died (the OOM killer picks the largest process,
# often an idle Mathlib REPL) or was stopped is replaced before a proof is sent to it.
_SWEEP_PERIOD = 1.0


class Lifecycle:
    """The set of workers and what happens to them. The pool lends it: `spawn` (a task the pool
    cancels on close), `kick` (run the scheduler soon), `finish` (answer a job), `prune` (forget a
    header nothing uses any more) and `closing` (the pool is shutting down)."""

    def __init__(
        self,
        settings: PoolSettings,
        *,
        queue: JobQueue,
        totals: Totals,
        import_cost: Mean,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        kick: Callable[[], None],
        finish: Callable[[Job, Outcome], None],
        prune: Callable[[PoolKey], None],
        closing: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.totals = totals
        self.import_cost = import_cost
        self._spawn = spawn
        self._kick = kick
        self._finish = finish
        self._prune = prune
        self._closing = closing
        self.workers: set[Worker] = set()
        self.importing = 0
        """Workers importing their header now (LEAN_SERVER_MAX_CONCURRENT_IMPORTS bounds them)."""
        # REPLs to start as soon as the pool has room and the import bound allows: pre-warm, then
        # replacements of REPLs that died or were recycled.
        self.to_start: list[PoolKey] = []
        self.readiness = Readiness(retry=self.start_again, closing=closing)
        self._ids = itertools.count(1)
        self._rng = random.Random(settings.seed)
        self._import_failures: dict[PoolKey, int] = {}
        self.start_backoff = StartBackoff(kick)
        """New REPLs of a header whose imports failed wait (spares; working ones while one serves)."""
        self.memory = MemoryGate(settings.min_free_memory, kick)
        """Whether memory allows a new REPL now (LEAN_SERVER_MIN_FREE_MEMORY)."""
        self._sweeper: asyncio.TimerHandle | None = None

    # ----------------------------------------------------------------- what there is

    def working(self) -> int:
        """REPLs that count toward MAX_REPLS (all but the spares)."""
        return sum(not w.spare for w in self.workers)

    def counts(self) -> dict[PoolKey, int]:
        """Working REPLs per key, in any state."""
        return working_counts(self.workers)

    def starting_for(self, key: PoolKey) -> int:
        return sum(1 for w in self.workers if w.key == key and w.state is WorkerState.STARTING and not w.spare)

    def idle(self) -> list[Worker]:
        """Idle REPLs that may take work (spares wait for a REPL to replace)."""
        return [w for w in self.workers if w.state is WorkerState.IDLE and not w.spare]

    def room(self) -> bool:
        """A working REPL may start now: the pool has room and the import bound allows (memory
        aside: `memory`)."""
        return self.working() < self.settings.max_repls and self.importing < self.settings.max_concurrent_imports

    def serves(self, key: PoolKey) -> bool:
        """A working REPL of `key` has imported it (idle or busy)."""
        return any(
            w.key == key and not w.spare and w.state in (WorkerState.IDLE, WorkerState.BUSY) for w in self.workers
        )

    def uses(self, key: PoolKey) -> bool:
        """Some REPL, in any state, is bound to `key`, or one waits to start for it."""
        return key in self.to_start or any(w.key == key for w in self.workers)

    def held(self, key: PoolKey) -> bool:
        """A warm REPL serves `key` and its last new REPLs died importing (memory): no new one
        starts before the start backoff is over."""
        return self.start_backoff.held(key) and self.serves(key)

    def owes_starts(self) -> bool:
        """Working REPLs wait to start (pre-warm, replacements, a retry) and the pool has room for
        them: the import slots are theirs before the spares'. One that waits for a slot of a full
        pool, or for its backoff, holds no spare back (a spare takes no slot)."""
        return self.working() < self.settings.max_repls and any(not self.held(k) for k in self.to_start)

    def forget(self, key: PoolKey) -> None:
        self._import_failures.pop(key, None)
        self.start_backoff.succeeded(key)

    # ----------------------------------------------------------------- start and stop

    def start(self) -> None:
        """Queue the pre-warm starts (LEAN_SERVER_INIT_REPLS), begin sweeping, and probe the REPL
        when there is nothing to pre-warm."""
        settings = self.settings
        self.to_start += self.readiness.plan(settings.init_repls, settings.max_repls, settings.spare_repls)
        self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_PERIOD, self._sweep)
        if not self.to_start:
            self.readiness.probing = True
            self._spawn(self._probe_repl())

    async def _probe_repl(self) -> None:
        await self.readiness.probe(self.settings.spec, self.settings.import_timeout)
        self._kick()

    def stop_timers(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.memory.close()
        self.start_backoff.close()

    async def retire_all(self) -> None:
        await asyncio.gather(*(self.retire(w) for w in list(self.workers)), return_exceptions=True)

    def start_waiting(self) -> None:
        """Start the REPLs waiting to (pre-warm, replacements, a readiness retry) in order while
        the pool has room, but none whose header its start backoff holds (`held`)."""
        while self.room() and (key := next((k for k in self.to_start if not self.held(k)), None)) is not None:
            if not self.memory.ok():
                return
            self.to_start.remove(key)
            self.new(key, planned=True)

    def new(self, key: PoolKey, *, spare: bool = False, planned: bool = False) -> Worker:
        """Start a REPL for `key` (it imports in the background); `planned`: one the pool owes
        (pre-warm, a replacement, a spare), which may take a place of pre-warming."""
        limit = use_limit(self.settings.max_repl_uses, self.settings.max_repl_uses_jitter, self._rng)
        worker = Worker(key, f"repl-{next(self._ids)}", max_uses=limit, spare=spare)
        self.workers.add(worker)
        self.readiness.enlist(worker, planned=planned)
        self.importing += 1
        self._spawn(self._start_worker(worker))
        return worker

    def replace(self, worker: Worker, key: PoolKey) -> None:
        """Retire `worker` and start one for `key` in its place (a REPL for one proof gives the
        place back when it is done: the pool keeps its strength)."""
        self.workers.discard(worker)
        self._spawn(self.retire(worker, recycled=True))
        if not self._closing() and not (not key.fresh and self.take_spare(key)):
            new = self.new(key)
            if key.fresh and not worker.key.fresh:
                new.returns = worker.key

    def release_fresh(self, worker: Worker) -> None:
        """A REPL started for one proof is done with it (or its proof went first): it goes, and the
        pool REPL it stood in for comes back."""
        worker.state = WorkerState.GONE
        self.workers.discard(worker)
        self._spawn(self.retire(worker))
        if worker.returns is not None and not self._closing() and not self.take_spare(worker.returns):
            self.to_start.append(worker.returns)

    def retire_spare(self, key: PoolKey) -> None:
        """Retire one idle spare of `key`, if there is one."""
        idle = [w for w in self.workers if w.spare and w.key == key and w.state is WorkerState.IDLE]
        if idle:
            self.workers.discard(idle[0])
            self._spawn(self.retire(idle[0]))

    async def retire(self, worker: Worker, *, recycled: bool = False) -> None:
        worker.state = WorkerState.GONE
        self.workers.discard(worker)
        self._prune(worker.key)
        if recycled:
            self.totals.recycles += 1
        if worker.repl is not None:
            await worker.repl.kill()

    async def lost(self, worker: Worker) -> None:
        """A REPL died or was killed: reap it and start its replacement in the background."""
        await self.retire(worker)
        key = worker.returns if worker.key.fresh else worker.key
        if not self._closing() and not worker.spare and key is not None and not self.take_spare(key):
            self.to_start.append(key)
        self._kick()

    def promote_spare(self, key: PoolKey) -> bool:
        """The working set grows by a warm idle spare of `key` instead of a new import (its own
        successor is started by the scheduler's `place_spares`); False if there is none."""
        spare = next((w for w in self.workers if w.spare and w.key == key and w.state is WorkerState.IDLE), None)
        if spare is None:
            return False
        spare.spare = False
        spare.warm_since = time.monotonic()
        return True

    def take_spare(self, key: PoolKey) -> bool:
        """Put a warm spare of `key` to work in the place of a REPL that went (its own successor
        is started by the scheduler's `place_spares`); else one still importing (the slot waits for the
        rest of its import, not a whole one: a cold swap all the same); False if there is none."""
        spares = [w for w in self.workers if w.spare and w.key == key and w.state is not WorkerState.GONE]
        # A warm one first, else the one started first (the least import left: ids count up, repl-9 before repl-10).
        spare = min(spares, key=lambda w: (w.state is not WorkerState.IDLE, len(w.id), w.id), default=None)
        if spare is None or spare.state is not WorkerState.IDLE:
            self.totals.cold_swaps += 1
            if spare is None:
                return False
        spare.spare = False
        if spare.state is not WorkerState.IDLE:
            return True
        spare.warm_since = time.monotonic()
        self.totals.warm_swaps += 1
        return True

    def start_again(self, key: PoolKey, places: int) -> None:
        """Readiness's background retry: start a REPL for `key` unless one is on its way; on
        recovery, one for each of `places` places of pre-warming no start waiting takes (a REPL
        importing, even the one that recovered and still settles, has a place of its own)."""
        if places:
            owed = places - self.to_start.count(key)
        else:
            starting = any(w.key == key and w.state is WorkerState.STARTING for w in self.workers)
            owed = 0 if key in self.to_start or starting else 1
        if owed > 0:
            self.to_start.extend([key] * owed)
            self._kick()

    # ----------------------------------------------------------------- a start, and a watch

    async def _start_worker(self, worker: Worker) -> None:
        started = time.monotonic()
        try:
            worker.repl = await Repl.start(self.settings.spec, worker.id)
            reply, _ = await asyncio.wait_for(
                worker.repl.run(protocol.command(worker.key.header), measure=False), self.settings.import_timeout
            )
        except (ReplCrashed, ReplyRefused, TimeoutError) as exc:
            self.importing -= 1
            await self._import_failed(worker, exc)
            return
        except asyncio.CancelledError:
            self.importing -= 1
            await self.retire(worker)
            raise
        except Exception as exc:  # the last resort: an unexpected failure is a failed start
            log.exception("repl_start_error", repl_id=worker.id)
            self.importing -= 1
            await self._import_failed(worker, exc)
            return
        self.importing -= 1
        try:
            await self._started(worker, reply, started)
        except Exception as exc:
            log.exception("repl_start_error", repl_id=worker.id)
            await self._import_failed(worker, exc)

    async def _started(self, worker: Worker, reply: Reply, started: float) -> None:
        """The header command was answered: make the REPL warm, or reject the header."""
        assert worker.repl is not None
        self.totals.imports += 1
        if verdict_of(reply) is not Verdict.VALID or reply.env is None:
            # Only imports are sent as a header, so Lean should say nothing; an error or a sorry
            # means this environment must never be a warm REPL's base (it would be unchecked).
            await self._header_rejected(worker, reply)
            return
        self.import_cost.add(time.monotonic() - started)
        self._import_failures.pop(worker.key, None)
        self.start_backoff.succeeded(worker.key)
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
            self.totals.crashes += 1
            await self.lost(worker)

    def _sweep(self) -> None:
        """Replace idle REPLs that were stopped (SIGSTOP): they would time out an innocent proof.
        Kill importing ones that were: their start fails now (and is tried again), not after the
        import timeout, with the header's proofs waiting all that time."""
        self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_PERIOD, self._sweep)
        for worker in [w for w in self.workers if w.state in (WorkerState.IDLE, WorkerState.STARTING)]:
            if worker.repl is None or not worker.repl.stopped():
                continue
            if worker.state is WorkerState.STARTING:
                log.warning("repl_stopped_importing", repl_id=worker.id, header=worker.key.header)
                self._spawn(worker.repl.kill())
                continue
            log.warning("repl_stopped_idle", repl_id=worker.id, header=worker.key.header)
            worker.state = WorkerState.GONE
            self.totals.crashes += 1
            self._spawn(self.lost(worker))

    # ----------------------------------------------------------------- a start that failed

    def _spare_failed(self, key: PoolKey) -> None:
        """A spare of `key` did not import: the next one waits. A header out of use gets no spare
        anyway: nothing is kept for it (`forget` has run)."""
        if self.uses(key) or self.queue.length(key):
            self.start_backoff.failed(key)

    async def _import_failed(self, worker: Worker, exc: BaseException) -> None:
        self.totals.crashes += 1
        key = worker.key
        # Counted, and the replacement queued, before the retire: it forgets a header nothing else uses.
        failures = 0 if worker.spare else self._import_failures.get(key, 0) + 1
        if not worker.spare:
            self._import_failures[key] = failures
            if self.serves(key):  # a warm REPL serves the header: the next start backs off
                self.start_backoff.failed(key)
        # The header kills every REPL that imports it (none of its REPLs is warm: one that is
        # proves a failure like this is the new process's, e.g. memory, and will serve the proofs).
        failing = not worker.spare and (failures >= 2 or worker.repl is None) and not self.serves(key)
        # Pre-warming no longer counts it, before its replacement may start (the scheduler may run
        # while it is reaped): that one takes its place. A spare's is given up (a standby lost, not
        # a header that fails; memory may keep its successor back for long).
        prewarm = worker in self.readiness.warmup
        self.readiness.went_cold(worker)
        if not worker.spare and (not failing or worker.key.fresh):
            self._replace_failed(worker)
        await self.retire(worker)
        if failing and self.serves(key):  # one of it imported while this one was reaped: it serves
            failing = False
            self.start_backoff.failed(key)
            if not key.fresh:
                self._replace_failed(worker)
        if worker.spare:
            # A standby lost: its header's proofs wait for its working REPLs, whose own imports
            # decide whether the header fails; the next spare backs off.
            self._spare_failed(key)
        error = (str(exc) or repr(exc))[:500]
        log.warning("repl_start_failed", repl_id=worker.id, header=key.header, error=error)
        spec = self.settings.spec
        outcome = import_failed(exc, self.settings.import_timeout)  # says what a TimeoutError does not
        if worker.repl is None or not key.header:
            # The configured REPL cannot be started, or dies before it has imported nothing at all:
            # nothing will work until that is fixed.
            self.readiness.set_problem(None, f"{exc} (command: {' '.join(spec.argv)}; cwd: {spec.cwd})")
        elif prewarm and not worker.spare:
            self.readiness.set_problem(key, f"pre-warm header {key.header!r} failed: {outcome.error}")
        if failing:
            # Its waiting proofs are answered instead of looping. The failures stay counted while a
            # REPL of it is left (one importing fails the header again, unreplaced) until one
            # imports or the header is forgotten (`forget`: nothing uses it any more).
            for job in self.queue.drain(key):
                self._finish(job, outcome)
        self._kick()

    def _replace_failed(self, worker: Worker) -> None:
        """A working REPL did not import: the pool owes its place, as for one that died (`lost`),
        whether or not proofs of its header wait: a warm spare takes it, else a new REPL starts, at
        once while none of the header is warm (a second failure in a row then fails the header),
        else after the start backoff (`held`). One lent to a reuse=false proof gives the pool's
        REPL back (even when the proof's own header fails)."""
        key = worker.returns if worker.key.fresh else worker.key
        if key is None or self._closing():
            return
        spare = any(w.spare and w.key == key and w.state is not WorkerState.GONE for w in self.workers)
        if not (spare and self.take_spare(key)):
            self.to_start.append(key)

    async def _header_rejected(self, worker: Worker, reply: Reply) -> None:
        """Lean did not accept the imports: every proof of this header gets Lean's verdict and
        messages on the user's import lines; the REPL is never used. One lent to a reuse=false
        proof gives the pool's REPL back."""
        prewarm = worker in self.readiness.warmup
        self.readiness.went_cold(worker)
        if worker.key.fresh and not worker.spare:
            self._replace_failed(worker)
        await self.retire(worker)
        if worker.spare:
            self._spare_failed(worker.key)
        rejected = Rejected(reply)
        if prewarm:
            self.readiness.set_problem(
                worker.key, f"pre-warm header {worker.key.header!r} failed: {rejected.summary()}"
            )
        for job in self.queue.drain(worker.key):
            self._finish(job, rejected.outcome(job.split, worker.id))
        self._kick()
