"""The scheduler: after every change of state, one pass that reads the pool, asks the policy
(policy.py: pure decisions over a snapshot) where REPLs go, and carries its answers out through
the lifecycle (lifecycle.py). Each idle REPL takes the oldest job of its key; REPLs start while the
pool has room; a full pool converts an idle REPL of another header when the waiting work outweighs
an import; warm spares follow the demand. The clock, the queue and the workers are read here, so
that the policy reads none of them."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from kimina_grpc.supervisor.config import PoolSettings
from kimina_grpc.supervisor.jobs import Job, PoolKey
from kimina_grpc.supervisor.lifecycle import Lifecycle
from kimina_grpc.supervisor.policy import (
    Idle,
    Snapshot,
    Step,
    SwitchPolicy,
    Waiting,
    expires_soon,
    idle_step,
    move_target,
    neediest,
    spare_plan,
    worth_converting,
)
from kimina_grpc.supervisor.queue import JobQueue
from kimina_grpc.supervisor.state import Mean
from kimina_grpc.supervisor.workers import Worker


class Scheduler:
    """Runs `schedule` soon after each `kick`; `run(worker, job)` hands a job to an idle REPL."""

    def __init__(
        self,
        settings: PoolSettings,
        *,
        queue: JobQueue,
        lifecycle: Lifecycle,
        import_cost: Mean,
        proof_cost: Mean,
        run: Callable[[Worker, Job], None],
        closing: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.lifecycle = lifecycle
        self.import_cost = import_cost
        self.proof_cost = proof_cost
        self._run = run
        self._closing = closing
        self.policy = SwitchPolicy()
        # When a proof of each header last started on a REPL: a header's wait for a switch counts from it.
        self._served: dict[PoolKey, float] = {}
        self._kick_pending = False

    def kick(self) -> None:
        """Schedule soon (once, however many kicks come before it runs)."""
        if not self._kick_pending and not self._closing():
            self._kick_pending = True
            asyncio.get_running_loop().call_soon(self.schedule)

    def forget(self, key: PoolKey) -> None:
        self._served.pop(key, None)

    def schedule(self) -> None:
        self._kick_pending = False
        if self._closing():
            return
        now = time.monotonic()
        workers = self.lifecycle
        max_repls = self.settings.max_repls
        workers.start_waiting()
        idle = workers.idle()
        switches: dict[str, PoolKey] = {}
        if workers.working() >= max_repls:
            switches = {s.repl: s.to for s in self.policy.switches(self._snapshot(now, idle))}
        # 1. Idle REPLs take the oldest job of their key, unless the policy moves them (to a key with
        #    no REPL that starves, or to the one that drains last); `policy.idle_step` decides.
        for worker in idle:
            queued = self.queue.length(worker.key)
            may_import = workers.importing < self.settings.max_concurrent_imports
            move = self._move_target(worker) if queued and may_import else None
            step, to = idle_step(worker.key, queued, switches.get(worker.id), move)
            if step is Step.RELEASE:
                workers.release_fresh(worker)
                self.kick()
            elif to is not None:  # SWITCH or MOVE
                workers.replace(worker, to)
            elif step is Step.RUN:
                self._served[worker.key] = time.monotonic()
                self._run(worker, self.queue.pop(worker.key))
        waiting = [(q[0].submitted, key) for key, q in self.queue.waiting()]
        if not waiting:
            self.place_spares()
            return
        waiting.sort(key=lambda x: x[0])  # oldest first: no key starves
        # 2. Grow the working set while the pool has room, for the keys that need them most: by a warm
        #    spare of the key where there is one (it runs on the next pass), else by a new REPL.
        promoted: dict[PoolKey, int] = {}  # they take proofs on the next pass: count them as on their way
        # A header a warm REPL serves whose last new REPLs died importing (memory) waits for it.
        keys = [k for _, k in waiting if not workers.held(k)]
        while workers.working() < max_repls and (key := self._neediest(keys, promoted)) is not None:
            if workers.promote_spare(key):
                promoted[key] = promoted.get(key, 0) + 1
            elif workers.room() and workers.memory.ok():
                workers.new(key)
            else:
                break
        if promoted:
            self.kick()
        # 3. The pool is full: convert idle REPLs of other keys where the wait outweighs an import.
        if workers.working() >= max_repls:
            for _, key in waiting:
                if workers.importing >= self.settings.max_concurrent_imports:
                    break
                victim = self._conversion_victim(key)
                if victim is not None:
                    workers.replace(victim, key)
        self.place_spares()

    def place_spares(self) -> None:
        """Start and retire spares as `policy.spare_plan` says; they import only after the working
        REPLs' own starts (they wait for import slots the working set does not need), but not
        after one that waits for a slot of a full pool or for its backoff (`owes_starts`)."""
        workers = self.lifecycle
        if not self.settings.spare_repls and not any(w.spare for w in workers.workers):
            return
        spares: dict[PoolKey, int] = {}
        for w in workers.workers:
            if w.spare:
                spares[w.key] = spares.get(w.key, 0) + 1
        queued = {k: len(q) for k, q in self.queue.waiting()}
        expiring: dict[PoolKey, int] = {}
        if self.settings.max_repl_uses:
            # Within an import's worth of proofs of the limit: its successor is started ahead.
            ahead = self._ahead()
            for w in workers.workers:
                if not w.spare and not w.key.fresh and expires_soon(w.uses, w.max_uses, ahead):
                    expiring[w.key] = expiring.get(w.key, 0) + 1
        working = workers.counts()
        for w in workers.workers:
            if w.returns is not None:  # lent to a reuse=false proof: its header is still in use
                working[w.returns] = working.get(w.returns, 0) + 1
        # No spare for a header that has not imported once yet, but for pre-warming's (`policy.spare_plan`).
        cold = {k for k in set(working) | set(queued) if not workers.serves(k) and not workers.readiness.waits_for(k)}
        start, retire = spare_plan(self.settings.spare_repls, working, queued, spares, expiring, cold=cold)
        for key in retire:
            workers.retire_spare(key)
        for key in start:
            if workers.start_backoff.held(key):  # its last spare import failed: `policy.spare_retry_delay`
                continue
            if workers.owes_starts() or workers.importing >= self.settings.max_concurrent_imports:
                break
            if not workers.memory.ok():
                workers.readiness.spares_held_back()
                break
            workers.new(key, spare=True, planned=True)

    def _ahead(self) -> int:
        """Proofs before MAX_REPL_USES within which a REPL's successor is made ready: an import's worth."""
        return max(1, math.ceil(self.import_cost.value / max(self.proof_cost.value, 1e-3)))

    def _snapshot(self, now: float, idle: list[Worker]) -> Snapshot:
        counts = self.lifecycle.counts()
        return Snapshot(
            now=now,
            import_cost=self.import_cost.value,
            proof_cost=self.proof_cost.value,
            max_wait=self.settings.max_wait,
            import_slots=self.settings.max_concurrent_imports - self.lifecycle.importing,
            waiting=tuple(
                Waiting(key, q[0].submitted, counts.get(key, 0), self._served.get(key))
                for key, q in self.queue.waiting()
            ),
            idle=tuple(
                Idle(w.id, w.key, self.queue.length(w.key), counts[w.key], w.idle_since, w.warm_since) for w in idle
            ),
        )

    def _neediest(self, keys: list[PoolKey], promoted: dict[PoolKey, int]) -> PoolKey | None:
        starting = {key: self.lifecycle.starting_for(key) + promoted.get(key, 0) for key in keys}
        return neediest(keys, {key: self.queue.length(key) for key in keys}, self.lifecycle.counts(), starting)

    def _conversion_victim(self, key: PoolKey) -> Worker | None:
        idle = [w for w in self.lifecycle.idle() if w.key != key and not self.queue.length(w.key)]
        if not idle:
            return None
        if not worth_converting(self._backlog(key), self.lifecycle.counts().get(key, 0), self.import_cost.value):
            return None
        return min(idle, key=lambda w: w.idle_since)  # the one idle longest

    def _move_target(self, worker: Worker) -> PoolKey | None:
        """Where an idle REPL whose header still has work moves (`policy.move_target`), if anywhere."""
        backlogs = {key: self._backlog(key) for key, _ in self.queue.waiting()}
        return move_target(worker.key, backlogs, self.lifecycle.counts(), self.import_cost.value)

    def _backlog(self, key: PoolKey) -> float:
        """Estimated seconds of queued work for `key`."""
        return self.queue.length(key) * self.proof_cost.value
