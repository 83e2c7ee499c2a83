"""The room between service and supervisor: never check the same proof twice.

The service talks to `CheckCache` as it talked to the supervisor (`submit_many`, `submit_when_room`,
`cancel`, a future per proof). For each proof: a stored result answers it at once (a hit); else an
identical proof already queued or running is joined (in-flight dedupe); else the supervisor gets a
job (a miss). Every caller keeps its own ticket and its own result. A shared check runs while one
of its callers still waits: cancelling one ticket never cancels the check; cancelling the last does.

A caller joins only a check with its own timeout and deadline (and, when it asks for diagnostics, one
that measures them), so every caller of one check gets the same answer. A stored result whose Lean
time is longer than the caller's timeout is a miss: the caller's own check would have timed out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from kimina_grpc.cache.key import proof_key
from kimina_grpc.cache.store import CACHEABLE, MemoryStore, RedisStore, decode, encode, log
from kimina_grpc.repl import Split
from kimina_grpc.supervisor.jobs import CheckOptions, Job, Outcome, not_checked
from kimina_grpc.supervisor.pool import Supervisor


@dataclass(eq=False, slots=True)
class Ticket:
    """One caller's proof. Answered exactly once, through `future`."""

    future: asyncio.Future[Outcome]
    timeout: float
    check: _Check | None = None
    job: Job | None = None
    """Set when the proof went straight to the supervisor (cache off or bypassed)."""


@dataclass(eq=False, slots=True)
class _Check:
    """One supervisor job answering every ticket waiting on its key."""

    key: str
    job: Job
    owner: Ticket
    waiters: set[Ticket] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class CacheStats:
    enabled: bool
    backend: str
    remote_up: bool
    entries: int
    bytes: int
    hits: int
    misses: int
    joins: int
    backend_errors: int
    environment: str


class CheckCache:
    def __init__(
        self,
        supervisor: Supervisor,
        environment: str,
        *,
        enabled: bool = True,
        memory: MemoryStore | None = None,
        remote: RedisStore | None = None,
        max_entry_bytes: int = 1 << 20,
    ) -> None:
        self.supervisor = supervisor
        self.environment = environment
        self.enabled = enabled
        self.memory = memory
        self.remote = remote
        self.max_entry_bytes = max_entry_bytes
        self._in_flight: dict[str, _Check] = {}
        self.hits = 0
        self.misses = 0
        self.joins = 0

    # ----------------------------------------------------------------- the supervisor's shape

    async def submit_many(self, items: Iterable[tuple[Split, CheckOptions]]) -> list[Ticket]:
        """Answer, join or queue proofs; all or none: QueueFull if the queue cannot take the misses."""
        batch = list(items)
        keys = [self._key(split, options) for split, options in batch]
        remote = await self._fetch_remote({k for k in keys if k is not None and self._local(k) is None})
        # From here on nothing awaits: no other caller can register a key between the decision and
        # the queueing, so identical proofs of concurrent calls always meet.
        loop = asyncio.get_running_loop()
        plan: list[Outcome | _Check | int] = []  # a hit, a check to join, or the index of a new job
        to_queue: list[tuple[Split, CheckOptions]] = []
        new_here: dict[str, tuple[int, CheckOptions]] = {}  # key -> (job index, options) of this batch
        for (split, options), key in zip(batch, keys, strict=True):
            if key is None:
                plan.append(len(to_queue))
                to_queue.append((split, options))
                continue
            found = self._lookup(key, options.timeout, remote)
            if found is not None:
                plan.append(found)
                continue
            check = self._joinable(key, options)
            if check is not None:
                plan.append(check)
                continue
            mine = new_here.get(key)
            if mine is not None and _may_join(mine[1], options):
                plan.append(-1 - mine[0])  # joins a job queued by this batch (negative: a joiner)
                continue
            new_here[key] = (len(to_queue), options)
            plan.append(len(to_queue))
            to_queue.append((split, options))
        jobs = self.supervisor.submit_many(to_queue)  # raises QueueFull before anything is recorded
        checks: dict[int, _Check] = {}
        tickets: list[Ticket] = []
        for ((_, options), key), step in zip(zip(batch, keys, strict=True), plan, strict=True):
            ticket = Ticket(loop.create_future(), options.timeout)
            if isinstance(step, Outcome):
                self.hits += 1
                ticket.future.set_result(step)
            elif isinstance(step, _Check):
                self._join(step, ticket)
            elif step < 0:
                self._join(checks[-1 - step], ticket)
            elif key is None:
                ticket.job = jobs[step]
                ticket.future = jobs[step].future
            else:
                checks[step] = self._start(key, jobs[step], ticket)
            tickets.append(ticket)
        return tickets

    async def submit_when_room(self, split: Split, options: CheckOptions) -> Ticket:
        """One proof, waiting while the queue is full (a stream's backpressure)."""
        key = self._key(split, options)
        if key is None:
            job = await self.supervisor.submit_when_room(split, options)
            return Ticket(job.future, options.timeout, job=job)
        remote = await self._fetch_remote({key} if self._local(key) is None else set())
        ticket = Ticket(asyncio.get_running_loop().create_future(), options.timeout)
        if self._answer_or_join(key, ticket, options, remote):
            return ticket
        job = await self.supervisor.submit_when_room(split, options)
        # Waiting for room let others run: an identical proof may have been queued or answered
        # meanwhile. Ours is still queued (the pool schedules on the next loop turn): take it back.
        if self._answer_or_join(key, ticket, options, {}):
            self.supervisor.cancel(job)
            return ticket
        self._start(key, job, ticket)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """The caller is gone. The shared check goes on while another ticket waits for it."""
        if ticket.job is not None:
            self.supervisor.cancel(ticket.job)
            return
        if not ticket.future.done():
            ticket.future.cancel()
        check = ticket.check
        if check is None:
            return
        check.waiters.discard(ticket)
        if not check.waiters:
            if self._in_flight.get(check.key) is check:
                del self._in_flight[check.key]
            self.supervisor.cancel(check.job)

    def stats(self) -> CacheStats:
        if not self.enabled:
            backend = "off"
        else:
            backend = "+".join(name for name, s in (("memory", self.memory), ("redis", self.remote)) if s) or "none"
        return CacheStats(
            enabled=self.enabled,
            backend=backend,
            remote_up=self.remote.up if self.remote is not None else True,
            entries=len(self.memory) if self.memory is not None else 0,
            bytes=self.memory.bytes if self.memory is not None else 0,
            hits=self.hits,
            misses=self.misses,
            joins=self.joins,
            backend_errors=self.remote.errors if self.remote is not None else 0,
            environment=self.environment,
        )

    async def close(self) -> None:
        if self.remote is not None:
            await self.remote.close()

    # ----------------------------------------------------------------- lookups

    def _key(self, split: Split, options: CheckOptions) -> str | None:
        if not self.enabled or not options.cache:
            return None
        return proof_key(self.environment, split, options)

    def _local(self, key: str) -> bytes | None:
        return self.memory.get(key) if self.memory is not None else None

    async def _fetch_remote(self, keys: set[str]) -> dict[str, bytes]:
        keys -= self._in_flight.keys()  # those are joined, not fetched
        if self.remote is None or not keys:
            return {}
        found = await self.remote.get_many(keys)
        if self.memory is not None:
            for key, data in found.items():
                self.memory.put(key, data)
        return found

    def _lookup(self, key: str, timeout: float, remote: dict[str, bytes]) -> Outcome | None:
        data = self._local(key) or remote.get(key)
        outcome = decode(data) if data is not None else None
        if outcome is None or outcome.time_seconds > timeout:
            return None
        return outcome

    def _joinable(self, key: str, options: CheckOptions) -> _Check | None:
        """A check of the same key with the same timeout and deadline (a longer one would keep a
        joiner waiting past its own, a shorter one would answer where its own check might not) that
        measures what the joiner asks to have measured."""
        check = self._in_flight.get(key)
        return check if check is not None and _may_join(check.job.options, options) else None

    def _answer_or_join(self, key: str, ticket: Ticket, options: CheckOptions, remote: dict[str, bytes]) -> bool:
        found = self._lookup(key, ticket.timeout, remote)
        if found is not None:
            self.hits += 1
            ticket.future.set_result(found)
            return True
        check = self._joinable(key, options)
        if check is not None:
            self._join(check, ticket)
            return True
        return False

    # ----------------------------------------------------------------- checks

    def _start(self, key: str, job: Job, owner: Ticket) -> _Check:
        self.misses += 1
        check = _Check(key, job, owner, {owner})
        owner.check = check
        # A later check of the same key (a caller with a longer timeout) takes over new joiners;
        # this one still answers its own.
        self._in_flight[key] = check
        job.future.add_done_callback(lambda f: self._finished(check, f))
        return check

    def _join(self, check: _Check, ticket: Ticket) -> None:
        self.joins += 1
        ticket.check = check
        check.waiters.add(ticket)

    def _finished(self, check: _Check, future: asyncio.Future[Outcome]) -> None:
        if self._in_flight.get(check.key) is check:
            del self._in_flight[check.key]
        if future.cancelled():
            # Only `cancel` cancels a check, once nobody waits; answer any straggler all the same.
            outcome = not_checked("the shared check was cancelled")
        else:
            outcome = future.result()
            try:
                self._store(check.key, outcome)
            except Exception:  # storing is a bonus: the waiters are answered whatever happens
                log.exception("cache_store_failed")
        for ticket in check.waiters:
            if not ticket.future.done():
                ticket.future.set_result(outcome if ticket is check.owner else replace(outcome, shared=True))
        check.waiters.clear()

    def _store(self, key: str, outcome: Outcome) -> None:
        if outcome.verdict not in CACHEABLE or (self.memory is None and self.remote is None):
            return
        if outcome.reply is not None and len(outcome.reply.infotree or "") > self.max_entry_bytes:
            return  # too large to keep: not worth encoding
        data = encode(outcome)
        if len(data) > self.max_entry_bytes:
            return
        if self.memory is not None:
            self.memory.put(key, data)
        if self.remote is not None:
            self.remote.put(key, data)


def _may_join(theirs: CheckOptions, mine: CheckOptions) -> bool:
    """Whether a check run with `theirs` answers a caller asking with `mine` as its own would."""
    same_bounds = (theirs.timeout, theirs.deadline) == (mine.timeout, mine.deadline)
    return same_bounds and (theirs.diagnostics or not mine.diagnostics)
