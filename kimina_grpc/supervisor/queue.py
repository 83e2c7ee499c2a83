"""Jobs waiting for a REPL: admission (the count and byte bounds), one FIFO per PoolKey, expiry (the
wait bound and the caller's deadline), cancellation, and the submitters waiting for room. Pure
asyncio bookkeeping: which REPL takes which job is the scheduler's (scheduler.py, on policy.py's decisions)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator

from kimina_grpc.repl import Split
from kimina_grpc.supervisor.jobs import CheckOptions, Job, PoolKey, not_checked


class QueueFull(Exception):
    """The queue cannot take the work now."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("the server's queue is full")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The supervisor no longer takes work."""


class JobQueue:
    """One FIFO of jobs per PoolKey, bounded by `max_queue` jobs and `max_queue_bytes` bytes of code
    (0 = no byte bound; one proof larger than the byte bound still fits an empty queue)."""

    def __init__(
        self,
        *,
        max_queue: int,
        max_queue_bytes: int,
        max_wait: float,
        min_timeout: float,
        left: Callable[[PoolKey], None],
    ) -> None:
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.max_wait = max_wait
        self.min_timeout = min_timeout
        self._on_left = left
        """Called with a job's key when the job leaves the queue (the pool forgets a key with no
        work and no REPL: headers are caller-chosen)."""
        self._queues: dict[PoolKey, deque[Job]] = {}
        self.count = 0
        self.bytes = 0
        # Submitters waiting for room in a full queue, oldest first: each dequeue wakes one.
        self._room_waiters: deque[asyncio.Future[None]] = deque()

    # ----------------------------------------------------------------- what is queued

    def __len__(self) -> int:
        return self.count

    def length(self, key: PoolKey) -> int:
        return len(self._queues.get(key, ()))

    def oldest(self, key: PoolKey) -> Job | None:
        queue = self._queues.get(key)
        return queue[0] if queue else None

    def waiting(self) -> Iterator[tuple[PoolKey, deque[Job]]]:
        """The keys with queued jobs, and their queues (oldest job first)."""
        return ((key, q) for key, q in self._queues.items() if q)

    def known_keys(self) -> set[PoolKey]:
        """Every key the queue knows (also those whose queue just emptied)."""
        return set(self._queues)

    @property
    def waiting_for_room(self) -> int:
        """Submitters waiting for room in a full queue (a stream's backpressure)."""
        return sum(not r.done() for r in self._room_waiters)

    # ----------------------------------------------------------------- admission

    def admits(self, sizes: list[int]) -> bool:
        """Whether the queue takes all of these proofs at once."""
        return not (
            self.count + len(sizes) > self.max_queue
            or (self.max_queue_bytes and self.count and self.bytes + sum(sizes) > self.max_queue_bytes)
        )

    def full(self, size: int) -> bool:
        """Whether the queue has no room for one more proof of `size` bytes."""
        return self.count >= self.max_queue or bool(
            self.max_queue_bytes and self.count and self.bytes + size > self.max_queue_bytes
        )

    async def wait_for_room(self, size: int, closed: Callable[[], bool]) -> None:
        """Return once a proof of `size` bytes fits (or `closed()`: the caller's submit says so).
        First come, first served: behind those already waiting, and a waiter woken without enough
        room (a large proof) keeps its place at the front, so a stream of small ones never starves it."""
        woken = False
        while not closed() and ((not woken and self.waiting_for_room) or self.full(size)):
            room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if woken:
                self._room_waiters.appendleft(room)
            else:
                self._room_waiters.append(room)
            try:
                await room
            except asyncio.CancelledError:
                if room.done() and not room.cancelled():
                    self.wake_one()  # woken, then cancelled: hand the room on
                with contextlib.suppress(ValueError):
                    self._room_waiters.remove(room)
                raise
            woken = True

    def pass_room_on(self) -> None:
        """After a waiter's submit: room is left, so the next in line may fit too."""
        if self._room_waiters and not self.full(0):
            self.wake_one()

    def wake_one(self) -> None:
        while self._room_waiters:
            room = self._room_waiters.popleft()
            if not room.done():  # not cancelled with its submitter
                room.set_result(None)
                return

    def wake_all(self) -> None:
        while self._room_waiters:
            self.wake_one()

    # ----------------------------------------------------------------- in and out

    def push(self, job: Job, *, first: bool = False) -> None:
        queue = self._queues.setdefault(job.key, deque())
        if first:
            queue.appendleft(job)
        else:
            queue.append(job)
        self.count += 1
        self.bytes += job.size

    def pop(self, key: PoolKey) -> Job:
        job = self._queues[key].popleft()
        self._left(job)
        if job.expiry is not None:
            job.expiry.cancel()
        return job

    def remove(self, job: Job) -> bool:
        """Take a queued job out (cancelled, expired); False if it was not queued."""
        queue = self._queues.get(job.key)
        if queue is None:
            return False
        try:
            queue.remove(job)
        except ValueError:
            return False
        self._left(job)
        return True

    def _left(self, job: Job) -> None:
        self.count -= 1
        self.bytes -= job.size
        self._on_left(job.key)
        if self._room_waiters:
            self.wake_one()

    def forget(self, key: PoolKey) -> None:
        """Drop an empty key's queue."""
        if not self._queues.get(key):
            self._queues.pop(key, None)

    def drain(self, key: PoolKey) -> Iterator[Job]:
        """Pop every job of `key`, oldest first."""
        while self._queues.get(key):
            yield self.pop(key)

    def clear(self, reason: str) -> None:
        """Answer every queued job as not checked (shutdown)."""
        for queue in self._queues.values():
            while queue:
                queue.popleft().answer(not_checked(reason))
        self.count = 0
        self.bytes = 0

    # ----------------------------------------------------------------- expiry

    def arm_expiry(self, job: Job, max_wait: float) -> None:
        """Answer the job NOT_CHECKED if it is still queued after `max_wait` seconds (0: no bound)
        or at its caller's deadline."""
        waits = [max_wait] if max_wait > 0 else []
        if job.options.deadline is not None:
            # Out of the queue while the deadline still leaves the shortest check.
            waits.append(job.options.deadline - self.min_timeout - time.monotonic())
        if waits:
            job.expiry = asyncio.get_running_loop().call_later(max(0.0, min(waits)), self._expire, job)

    def _expire(self, job: Job) -> None:
        if not self.remove(job):
            return
        deadline = job.options.deadline
        if deadline is not None and time.monotonic() >= deadline - self.min_timeout - 0.01:
            job.answer(not_checked(too_short(deadline - time.monotonic(), self.min_timeout, "before a REPL was free")))
        else:
            job.answer(not_checked(f"waited {self.max_wait:g} s for a REPL (LEAN_SERVER_MAX_WAIT) and was not checked"))


def budget(options: CheckOptions, now: float) -> float:
    """Seconds a proof may run from `now`: its timeout, or less when its caller's deadline is nearer."""
    return options.timeout if options.deadline is None else min(options.timeout, options.deadline - now)


def too_short(budget: float, minimum: float, when: str) -> str:
    if budget <= 0:
        return f"the caller's deadline came {when}; not checked"
    return (
        f"{budget:.3g} s left to check it {when} (the caller's deadline or timeout), less than the "
        f"shortest check of {minimum:g} s (LEAN_SERVER_MIN_TIMEOUT); not checked"
    )


def size_of(split: Split, options: CheckOptions) -> int:
    """Bytes a queued proof holds (the queue is bounded in bytes): its code and reference statement."""
    statement = options.trust.statement if options.trust is not None and options.trust.statement else ""
    return len(split.header.encode()) + len(split.body.encode()) + len(statement.encode())
