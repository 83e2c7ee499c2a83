"""One call over many backends: a sub-stream (StreamVerify) per backend in use, fed by the balancer.

The call holds the pending set: every proof taken from the caller's source stays in it until its one
result is out. A sub-stream that breaks (connection reset, process killed, pod evicted) or a backend
that refuses a proof as it shuts down (`retryable`) puts its unanswered proofs back at the head of
the backlog, and they go to the other backends; a result for an id already answered is dropped, so
each id is answered exactly once. Memory: at most `max_in_flight` proofs held (sent or waiting), and
per backend its window (`_balance.backend_window`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import grpc

from kimina_grpc.client._backends import Backend, BackendSet
from kimina_grpc.client._balance import Load, backend_window, header_key
from kimina_grpc.client._errors import InvalidArgument, KiminaError, translate
from kimina_grpc.client._types import Proof, Result
from kimina_grpc.client._wire import from_proto, to_proto
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.verdict import Verdict

LOOKAHEAD = 256  # proofs taken from the source ahead of a free slot, so one full header does not block others


def next_proof(source: Iterator[Proof], pending: dict[str, Proof]) -> Proof | None:
    """The source's next proof; a repeated id in flight is refused, as its results could not be told apart."""
    proof = next(source, None)
    if proof is not None and proof.id in pending:
        raise ValueError(f"proof id {proof.id!r} is already in flight on this stream; ids must differ")
    return proof


def stream_item(proof: Proof, opts: pb.ProofOptions) -> pb.StreamVerifyRequest:
    item = pb.StreamVerifyRequest(proof=to_proto(proof))
    item.proof.options.MergeFrom(opts)  # keeps the proof's own statement and theorem name
    return item


@dataclass(eq=False)
class _Sub:
    """This call's sub-stream to one backend."""

    backend: Backend
    outbox: asyncio.Queue[pb.StreamVerifyRequest | None] = field(default_factory=asyncio.Queue)
    in_flight: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    refusing: bool = False  # answered `retryable`: shutting down, nothing new for it in this call
    closed: bool = False


_CALLERS_FAULT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
"""A sub-stream ending with one of these fails the call: another backend would answer the same."""


class ClusterCall:
    """One verify_stream over the backends of a BackendSet; `run` yields results as they finish."""

    def __init__(
        self,
        backends: BackendSet,
        opts: pb.ProofOptions,
        window: int,
        metadata: tuple[tuple[str, str], ...],
        patience: float,
    ) -> None:
        self._set = backends
        self._opts = opts
        self._window = window
        self._metadata = metadata
        self._patience = patience
        self._balancer = backends.balancer
        self._max = max(1, backends.options.max_in_flight)
        self._pending: dict[str, Proof] = {}
        self._keys: dict[str, str] = {}
        self._backlog: deque[Proof] = deque()
        self._subs: dict[str, _Sub] = {}
        self._events: asyncio.Queue[tuple[_Sub, pb.ProofResult | None, BaseException | None]] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._exhausted = False

    async def run(self, source: Iterator[Proof]) -> AsyncIterator[Result]:
        try:
            await self._set.start(self._changed)  # inside: a call cancelled while it looks still stops
            idle_since: float | None = None
            while True:
                self._fill(source)
                self._place()
                if self._exhausted and not self._pending:
                    return
                idle_since = self._check_available(idle_since)
                for result in await self._next_results():
                    yield result
        finally:
            await self._close()

    def _fill(self, source: Iterator[Proof]) -> None:
        while not self._exhausted and len(self._pending) < self._max and len(self._backlog) < LOOKAHEAD:
            proof = next_proof(source, self._pending)
            if proof is None:
                self._exhausted = True
                return
            self._pending[proof.id] = proof
            self._keys[proof.id] = header_key(proof.code)
            self._backlog.append(proof)

    def _loads(self) -> list[Load]:
        loads = []
        for backend in self._set.backends.values():
            sub = self._subs.get(backend.address)
            loads.append(
                Load(
                    name=backend.address,
                    ready=backend.ready and not (sub and (sub.refusing or sub.closed)),
                    in_flight=backend.in_flight,  # all this client's calls: they share each backend's window
                    window=backend_window(self._window, backend.repls),
                    repls=backend.repls or self._window,
                )
            )
        return loads

    def _place(self) -> None:
        """Each waiting proof to the backend the balancer names; a header with nowhere to go waits
        (and the proofs of other headers behind it go on)."""
        blocked: set[str] = set()
        kept: deque[Proof] = deque()
        loads = {load.name: load for load in self._loads()}
        ready = [load.name for load in loads.values() if load.ready]
        waiting = {self._keys[p.id] for p in self._backlog}
        claimed = {self._balancer.owner(k, ready) for k in waiting} if ready and self._balancer.affinity else set()
        while self._backlog:
            proof = self._backlog.popleft()
            key = self._keys[proof.id]
            choice = None if key in blocked else self._balancer.choose(key, list(loads.values()), claimed)
            if choice is None:
                blocked.add(key)
                kept.append(proof)
                continue
            sub = self._sub(self._set.backends[choice.backend])
            sub.in_flight.add(proof.id)
            sub.backend.in_flight += 1
            sub.outbox.put_nowait(stream_item(proof, self._opts))
            sub.backend.sent += 1
            sub.backend.spilled += choice.spilled
            old = loads[choice.backend]
            loads[choice.backend] = Load(old.name, old.ready, old.in_flight + 1, old.window, old.repls)
        self._backlog = kept
        for sub in self._subs.values():  # a draining or removed backend holds nothing of ours: let it go
            if not sub.closed and not sub.in_flight and not sub.backend.ready:
                sub.closed = True
                sub.outbox.put_nowait(None)

    def _sub(self, backend: Backend) -> _Sub:
        sub = self._subs.get(backend.address)
        if sub is None:
            sub = self._subs[backend.address] = _Sub(backend)
            backend.users += 1
            sub.task = asyncio.create_task(self._stream(sub), name=f"kimina-substream-{backend.address}")
        return sub

    async def _stream(self, sub: _Sub) -> None:
        """Only this call cancels its sub-streams, and not through here: a CANCELLED end came from the
        server (stopping past its grace), so its proofs go elsewhere."""

        async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
            while (item := await sub.outbox.get()) is not None:
                yield item

        call = sub.backend.stub.StreamVerify(requests(), metadata=self._metadata)
        try:
            async for response in call:
                self._events.put_nowait((sub, response.result, None))
            self._events.put_nowait((sub, None, None))
        except grpc.RpcError as err:
            self._events.put_nowait((sub, None, err))
        finally:
            call.cancel()
            sub.outbox.put_nowait(None)  # ends the request generator, and gRPC's task that reads it

    async def _next_results(self) -> list[Result]:
        """Waits for a result, a sub-stream's end or a change of the backends; handles them all."""
        if self._events.empty():
            getter = asyncio.ensure_future(self._events.get())
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({getter, changed}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                if not getter.done():
                    getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(getter, changed, return_exceptions=True)
                if getter.done() and not getter.cancelled():
                    self._events.put_nowait(getter.result())
            self._changed.clear()
        results = []
        while not self._events.empty():
            sub, result, error = self._events.get_nowait()
            if result is not None:
                if (answer := self._answer(sub, result)) is not None:
                    results.append(answer)
            else:
                self._ended(sub, error)
        return results

    def _answer(self, sub: _Sub, result: pb.ProofResult) -> Result | None:
        if result.id not in sub.in_flight:
            return None  # not this sub-stream's to answer
        sub.in_flight.discard(result.id)
        sub.backend.in_flight -= 1
        self._set.released()  # a slot is free: the client's other calls may be waiting for one
        if result.retryable:  # a shutting-down server's: it goes to another backend
            sub.refusing = True
            sub.backend.resent += 1
            self._backlog.appendleft(self._pending[result.id])
            self._set.refused(sub.backend)
            return None
        sub.backend.answered += 1
        if self._pending.pop(result.id, None) is None:
            return None
        del self._keys[result.id]
        return from_proto(result)

    def _ended(self, sub: _Sub, error: BaseException | None) -> None:
        """A sub-stream ended: what it still held goes back to the backlog, to the others."""
        del self._subs[sub.backend.address]
        sub.backend.users -= 1
        sub.backend.in_flight -= len(sub.in_flight)
        if isinstance(error, grpc.RpcError) and error.code() in _CALLERS_FAULT:
            raise translate(error) from None  # the call's fault (bad key, bad input): no backend would take it
        # Anything else is the backend's or the connection's: UNAVAILABLE, CANCELLED (a server stopping
        # past its grace), and INTERNAL/UNKNOWN, which gRPC's core reports for a send on a stream whose
        # server just went away ("Internal error from Core"). Its proofs go to the others.
        lost = [self._pending[pid] for pid in sub.in_flight if pid in self._pending]
        sub.backend.resent += len(lost)
        self._backlog.extendleft(reversed(lost))
        if lost or (error is not None and sub.backend.ready and not sub.refusing):
            self._set.failed(sub.backend)  # a draining backend's stream ends UNAVAILABLE once it is empty

    def _check_available(self, idle_since: float | None) -> float | None:
        """Fails the call once no backend could take its work for `unavailable_after` seconds."""
        if any(b.ready for b in self._set.backends.values()) or any(s.in_flight for s in self._subs.values()):
            return None
        now = time.monotonic()
        if idle_since is None:
            return now
        if now - idle_since >= self._patience:
            raise KiminaError(
                grpc.StatusCode.UNAVAILABLE,
                f"no ready backend for {now - idle_since:.0f} s among {self._set.describe()}; "
                f"{len(self._pending)} proofs unanswered",
            )
        return idle_since

    async def _close(self) -> None:
        """Ends every sub-stream and awaits its task: nothing of this call outlives it."""
        subs = list(self._subs.values())
        for sub in subs:
            if sub.task is not None:
                sub.task.cancel()
        await asyncio.gather(*(s.task for s in subs if s.task is not None), return_exceptions=True)
        for sub in subs:
            sub.backend.users -= 1
            sub.backend.in_flight -= len(sub.in_flight)
        self._subs.clear()
        await self._set.stop(self._changed)


INVALID = "invalid: "  # a stream item the server refused (Verify refuses the call with these problems)


async def verify_in_order(
    backends: BackendSet,
    items: list[Proof],
    opts: pb.ProofOptions,
    metadata: tuple[tuple[str, str], ...],
    patience: float,
) -> list[Result]:
    """`verify` over a cluster: one sub-stream per backend, results back in request order, only the
    unanswered ever sent again. Refuses what Verify refuses (InvalidArgument): a repeated id, or a
    proof the server answers `invalid: ...`, which ends the call at once."""
    index: dict[str, int] = {}
    for i, p in enumerate(items):
        if p.id in index:
            raise _invalid([f"proofs[{i}].id: duplicate id {p.id!r}"])
        index[p.id] = i
    got: dict[str, Result] = {}
    async for r in ClusterCall(backends, opts, 64, metadata, patience).run(iter(items)):
        if r.verdict is Verdict.NOT_CHECKED and r.error.startswith(INVALID):
            problems = r.error.removeprefix(INVALID).split("; ")
            raise _invalid([f"proofs[{index[r.id]}].{p.removeprefix('proof.')}" for p in problems])
        got[r.id] = r
    return [got[p.id] for p in items]


def _invalid(problems: list[str]) -> InvalidArgument:
    return InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, problems[0], tuple(problems))
