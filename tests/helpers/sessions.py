"""ProofSession through the real server: a statement to prove, tactics for it in the stand-in's
directives, a session driven by hand, and the REPLs a server holds for sessions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import psutil

from kimina_grpc.service.server import App
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

STATEMENT = "theorem t (p q : Prop) (hp : p) (hq : q) : p ∧ q := by sorry"


CODE = f"import A\n\n{STATEMENT}"


SPLIT = "constructor\n-- fake: goals p || q"


EXACT_P = "exact hp\n-- fake: when p\n-- fake: done"


EXACT_Q = "exact hq\n-- fake: when q\n-- fake: done"


class Raw:
    """A ProofSession call driven by hand: requests in, responses by request id."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.queue: asyncio.Queue[pb.ProofSessionRequest | None] = asyncio.Queue()
        self.call = pb_grpc.VerifierServiceStub(channel).ProofSession(self._requests())
        self.answers: dict[str, pb.ProofSessionResponse] = {}

    async def _requests(self) -> AsyncIterator[pb.ProofSessionRequest]:
        while (r := await self.queue.get()) is not None:
            yield r

    async def open(self, code: str = CODE, **options: Any) -> pb.SessionOpened:
        await self.queue.put(pb.ProofSessionRequest(open=pb.SessionOpen(code=code, options=pb.ProofOptions(**options))))
        response = await self.call.read()
        assert isinstance(response, pb.ProofSessionResponse)
        return response.opened

    def send_run(self, rid: str, state: int, tactic: str) -> None:
        self.queue.put_nowait(pb.ProofSessionRequest(run=pb.TacticRequest(request_id=rid, state=state, tactic=tactic)))

    def send_finish(self, rid: str, state: int) -> None:
        self.queue.put_nowait(pb.ProofSessionRequest(finish=pb.FinishRequest(request_id=rid, state=state)))

    async def answer(self, rid: str) -> pb.ProofSessionResponse:
        while rid not in self.answers:
            response = await self.call.read()
            assert isinstance(response, pb.ProofSessionResponse)
            inner = response.tactic if response.HasField("tactic") else response.finished
            self.answers[inner.request_id] = response
        return self.answers.pop(rid)

    async def run(self, state: int, tactic: str, rid: str = "r") -> pb.TacticResult:
        self.send_run(rid, state, tactic)
        return (await self.answer(rid)).tactic

    async def finish(self, state: int, rid: str = "f") -> pb.FinishResult:
        self.send_finish(rid, state)
        return (await self.answer(rid)).finished

    async def close(self) -> None:
        await self.queue.put(None)
        with contextlib.suppress(grpc.aio.AioRpcError):
            while await self.call.read() is not grpc.aio.EOF:
                pass


def session_repls(app: App) -> list[psutil.Process]:
    room = app.servicer.sessions
    assert room is not None
    return [psutil.Process(r.repl.pid) for r in room.repls if r.repl is not None and not r.dead]
