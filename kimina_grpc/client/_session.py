"""Interactive proof sessions (ProofSession): `async with client.session(code) as s` and the
blocking `with client.session(code) as s` on KiminaClient's loop thread."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from kimina_grpc.client._errors import translate
from kimina_grpc.client._types import Message, Result
from kimina_grpc.client._wire import from_proto, message_from_proto
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

_STATUS = {
    pb.TACTIC_STATUS_INCOMPLETE: "incomplete",
    pb.TACTIC_STATUS_PROOF_COMPLETE: "proof_complete",
    pb.TACTIC_STATUS_ERROR: "error",
    pb.TACTIC_STATUS_TIMEOUT: "timeout",
}


@dataclass(frozen=True, slots=True)
class Goal:
    """A state to start from: one `sorry` of the opened code."""

    state: int
    goal: str
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Step:
    """A tactic's answer. `state` is the new state's id (0: none was made, see `error`)."""

    status: str
    """"incomplete", "proof_complete", "error" or "timeout"."""
    state: int
    goals: tuple[str, ...]
    messages: tuple[Message, ...]
    error: str
    time: float
    sorries: tuple[tuple[int, str], ...] = ()
    """The `sorry`s inside the tactic (`have h : p := by sorry`): (state, goal), states to run on."""
    traces: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return self.status == "proof_complete"


@dataclass(frozen=True, slots=True)
class Finished:
    """A `finish`: the verdict on the whole proof, and the proof that was checked."""

    result: Result
    proof: str


def _step(t: pb.TacticResult) -> Step:
    return Step(
        _STATUS.get(t.status, "error"),
        t.state,
        tuple(t.goals),
        tuple(message_from_proto(m) for m in t.messages),
        t.error,
        t.time_seconds,
        tuple((g.state, g.goal) for g in t.sorries),
        tuple(t.traces),
    )


class AsyncSession:
    """One open session. Requests may be pipelined: each awaits its own answer."""

    def __init__(self, stub: pb_grpc.VerifierServiceStub, metadata: Any, code: str, opts: pb.ProofOptions) -> None:
        self._stub, self._metadata, self._code, self._opts = stub, metadata, code, opts
        self._outbox: asyncio.Queue[pb.ProofSessionRequest | None] = asyncio.Queue()
        self._waiting: dict[str, asyncio.Future[pb.ProofSessionResponse]] = {}
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self._call: Any = None
        self.roots: list[Goal] = []
        self.session_id = ""

    async def _requests(self) -> AsyncIterator[pb.ProofSessionRequest]:
        while (request := await self._outbox.get()) is not None:
            yield request

    async def open(self) -> AsyncSession:
        self._call = self._stub.ProofSession(self._requests(), metadata=self._metadata)  # type: ignore[arg-type]
        self._outbox.put_nowait(pb.ProofSessionRequest(open=pb.SessionOpen(code=self._code, options=self._opts)))
        try:
            first = await self._call.read()
        except grpc.RpcError as err:
            raise translate(err) from None
        if first is grpc.aio.EOF or not first.HasField("opened"):
            raise translate_eof()
        self.session_id = first.opened.session_id
        self.roots = [Goal(s.state, s.goal, s.start.line, s.start.column) for s in first.opened.states]
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        try:
            while (response := await self._call.read()) is not grpc.aio.EOF:
                inner = response.tactic if response.HasField("tactic") else response.finished
                future = self._waiting.pop(inner.request_id, None)
                if future is not None and not future.done():
                    future.set_result(response)
            failure: Exception = ConnectionError("the session ended")
        except grpc.RpcError as err:
            failure = translate(err)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(failure)
        self._waiting.clear()

    async def _ask(self, request: pb.ProofSessionRequest, rid: str) -> pb.ProofSessionResponse:
        if self._reader is None or self._reader.done():
            raise ConnectionError("the session is not open")
        future: asyncio.Future[pb.ProofSessionResponse] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        self._outbox.put_nowait(request)
        return await future

    async def run(self, state: int, tactic: str) -> Step:
        rid = f"r{next(self._ids)}"
        request = pb.ProofSessionRequest(run=pb.TacticRequest(request_id=rid, state=state, tactic=tactic))
        return _step((await self._ask(request, rid)).tactic)

    async def run_many(self, steps: Iterable[tuple[int, str]]) -> list[Step]:
        """Every (state, tactic) sent at once; the answers in the same order."""
        return list(await asyncio.gather(*(self.run(state, tactic) for state, tactic in steps)))

    async def finish(self, state: int) -> Finished:
        rid = f"f{next(self._ids)}"
        request = pb.ProofSessionRequest(finish=pb.FinishRequest(request_id=rid, state=state))
        finished = (await self._ask(request, rid)).finished
        return Finished(from_proto(finished.result), finished.proof)

    async def close(self) -> None:
        self._outbox.put_nowait(None)
        if self._reader is not None:
            await self._reader
        elif self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> AsyncSession:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def translate_eof() -> Exception:
    return ConnectionError("the server ended the session before opening it")


class Session:
    """AsyncSession for blocking code: the same methods, run on the client's loop thread."""

    def __init__(self, inner: AsyncSession, loop: asyncio.AbstractEventLoop) -> None:
        self._inner, self._loop = inner, loop

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def roots(self) -> list[Goal]:
        return self._inner.roots

    def run(self, state: int, tactic: str) -> Step:
        step: Step = self._run(self._inner.run(state, tactic))
        return step

    def run_many(self, steps: Iterable[tuple[int, str]]) -> list[Step]:
        out: list[Step] = self._run(self._inner.run_many(list(steps)))
        return out

    def finish(self, state: int) -> Finished:
        out: Finished = self._run(self._inner.finish(state))
        return out

    def close(self) -> None:
        self._run(self._inner.close())

    def __enter__(self) -> Session:
        self._run(self._inner.open())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
