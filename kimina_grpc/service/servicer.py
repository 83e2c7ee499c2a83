"""VerifierService: validate, translate, hand to the cache layer (in front of the supervisor), translate back."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeAlias

import grpc
import structlog

from kimina_grpc.cache import CheckCache, Ticket
from kimina_grpc.prooflog.record import Call
from kimina_grpc.prooflog.writer import ProofLog
from kimina_grpc.service import convert, info, results
from kimina_grpc.service.errors import NotConfigured
from kimina_grpc.service.metrics import Metrics
from kimina_grpc.service.posture import Posture
from kimina_grpc.service.sessions import SessionCall, SessionCollector, make_room, sessions_state
from kimina_grpc.sessions import SessionRoom
from kimina_grpc.settings import Settings
from kimina_grpc.supervisor.exports import AstExporter
from kimina_grpc.supervisor.jobs import Outcome, not_checked
from kimina_grpc.supervisor.pool import Supervisor
from kimina_grpc.supervisor.queue import ShuttingDown
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc
from kimina_grpc.verdict import Verdict

log = structlog.get_logger("kimina_grpc.service")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

# Leave the caller this much of its deadline to receive the answers.
_DEADLINE_MARGIN = 0.25
_SHUTDOWN = "the server is shutting down"


def _deadline_left(context: Context) -> float | None:
    left = context.time_remaining()
    return None if left is None else max(0.001, left - _DEADLINE_MARGIN)


class VerifierServicer(pb_grpc.VerifierServiceServicer):
    def __init__(
        self,
        supervisor: Supervisor,
        checks: CheckCache,
        settings: Settings,
        metrics: Metrics,
        *,
        exporter: AstExporter | None = None,
        posture: Posture | None = None,
        prooflog: ProofLog | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.checks = checks
        self.settings = settings
        self.metrics = metrics
        self.exporter = exporter
        self.posture = posture or Posture()
        self.prooflog = prooflog
        self.draining = False
        self._streams: set[_Stream] = set()
        self.sessions: SessionRoom = make_room(supervisor, checks, settings)
        metrics.registry.register(SessionCollector(self.sessions))

    @property
    def open_streams(self) -> int:
        """StreamVerify calls open now."""
        return len(self._streams)

    def drain(self) -> None:
        """Shutdown begins: new calls get UNAVAILABLE, new items of open streams NOT_CHECKED."""
        self.draining = True

    def end_streams(self) -> None:
        """Shutdown, once the supervisor has answered every proof: open streams stop reading, send what
        they owe and end with UNAVAILABLE."""
        for stream in list(self._streams):
            stream.stop()

    def _refuse_when_draining(self) -> None:
        if self.draining:
            raise ShuttingDown

    async def Verify(self, request: pb.VerifyRequest, context: Context) -> pb.VerifyResponse:
        call = Call("Verify", uuid.uuid4().hex[:12], time.time(), request.tags)
        structlog.contextvars.bind_contextvars(request_id=call.request_id, rpc="Verify")
        self._refuse_when_draining()
        convert.check_batch(request, self.settings)
        left = _deadline_left(context)
        effs = [convert.effective(p.options, request.options, self.settings) for p in request.proofs]
        jobs = await self.checks.submit_many(
            convert.to_job(p, eff, left) for p, eff in zip(request.proofs, effs, strict=True)
        )
        try:
            outcomes: list[Outcome] = await asyncio.gather(*(j.future for j in jobs))
        except asyncio.CancelledError:
            for job in jobs:
                self.checks.cancel(job)
            raise
        for p, o, eff in zip(request.proofs, outcomes, effs, strict=True):
            self.metrics.result(o)
            if self.prooflog is not None:
                self.prooflog.record(call, p, o, eff.trust)
            log.debug("proof_done", proof_id=p.id, repl_id=o.repl_id, verdict=o.verdict.name, seconds=o.time_seconds)
        log.info("verify_done", proofs=len(outcomes))
        limit = self._result_limit()
        answers = [
            await self._result(p.id, o, eff.diagnostics, limit)
            for p, o, eff in zip(request.proofs, outcomes, effs, strict=True)
        ]
        results.fit_all(answers, limit)  # one response carries them all
        return pb.VerifyResponse(results=answers)

    def _result_limit(self) -> int:
        """Bytes one response may carry: gRPC's send limit, less room for the response's framing."""
        return max(4096, self.settings.max_message_bytes - results.MARGIN)

    async def _result(self, proof_id: str, outcome: Outcome, diagnostics: bool, limit: int) -> pb.ProofResult:
        result = await results.build(proof_id, outcome, diagnostics, limit)
        # Not checked while shutting down: the reason is this server's, another one checks the proof.
        result.retryable = self.draining and outcome.verdict is Verdict.NOT_CHECKED
        return result

    async def StreamVerify(
        self, request_iterator: AsyncIterator[pb.StreamVerifyRequest], context: Context
    ) -> AsyncIterator[pb.StreamVerifyResponse]:
        request_id = uuid.uuid4().hex[:12]
        structlog.contextvars.bind_contextvars(request_id=request_id, rpc="StreamVerify")
        self._refuse_when_draining()
        stream = _Stream(self, request_id)
        reader = stream.reader = asyncio.create_task(stream.read(request_iterator))
        self._streams.add(stream)
        try:
            while (result := await stream.results.get()) is not None:
                yield pb.StreamVerifyResponse(result=result)
                stream.window.release()  # the result is with the transport: only now its slot frees
            await reader  # every proof it read is answered: now its failure or ShuttingDown, if any
        finally:
            self._streams.discard(stream)
            reader.cancel()
            stream.cancel_all()

    async def ExportAst(self, request: pb.ExportAstRequest, context: Context) -> pb.ExportAstResponse:
        self._refuse_when_draining()
        convert.check_ast_request(request, self.settings)
        if self.exporter is None:
            raise NotConfigured("ExportAst needs an ast_export project (LEAN_SERVER_AST_EXPORT_PROJECT_DIR)")
        timeout = request.timeout_seconds if request.HasField("timeout_seconds") else self.settings.default_timeout
        left = _deadline_left(context)
        timeout = timeout if left is None else min(timeout, left)
        if request.code:
            items = [await self.exporter.code(request.code, request.module or "User.Code", timeout=timeout)]
        else:
            one = request.one if request.HasField("one") else True
            items = await self.exporter.modules(list(request.modules), one=one, timeout=timeout)
        return pb.ExportAstResponse(
            results=[pb.AstResult(module=i.module, ast=i.ast, error=i.error, time_seconds=i.seconds) for i in items]
        )

    async def ProofSession(
        self, request_iterator: AsyncIterator[pb.ProofSessionRequest], context: Context
    ) -> AsyncIterator[pb.ProofSessionResponse]:
        structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex[:12], rpc="ProofSession")
        self._refuse_when_draining()
        if self.settings.sessions_max == 0:
            raise NotConfigured("interactive sessions are off on this server (LEAN_SERVER_SESSIONS_MAX=0)")

        def result(rid: str, outcome: Outcome) -> Awaitable[pb.ProofResult]:  # a finish: no diagnostics
            return self._result(rid, outcome, False, self._result_limit())

        async for item in SessionCall(self.sessions, self.settings, result).serve(request_iterator):
            yield item

    async def close_sessions(self) -> None:
        """Shutdown: kill the sessions' REPLs (their calls end as the server stops)."""
        await self.sessions.close_all()

    async def GetServerInfo(self, request: pb.GetServerInfoRequest, context: Context) -> pb.GetServerInfoResponse:
        return info.server_info(
            self.supervisor.state(),
            not_ready_reason=self.supervisor.not_ready_reason,
            cache=self.checks.stats(),
            proof_log=None if self.prooflog is None else self.prooflog.state(),
            sessions=sessions_state(self.sessions),
            settings=self.settings,
            posture=self.posture,
        )


class _Stream:
    """One StreamVerify call. A window slot (LEAN_SERVER_STREAM_WINDOW) is taken before each item is read
    and freed when that item's result has been handed to the transport: a full window (proofs in flight,
    or results the client has not read yet) reads nothing more, so HTTP/2 flow control slows the client
    down, and at most `window` results ever wait here."""

    def __init__(self, servicer: VerifierServicer, request_id: str) -> None:
        self.servicer = servicer
        self.request_id = request_id
        self.window = asyncio.Semaphore(servicer.settings.stream_window)
        self.in_flight: dict[str, Ticket | None] = {}  # None: answered at once, its result being built
        self.results: asyncio.Queue[pb.ProofResult | None] = asyncio.Queue(servicer.settings.stream_window + 1)
        self.reading = True
        self.reader: asyncio.Task[None] | None = None
        self.delivering: set[asyncio.Task[None]] = set()  # results being built
        self.stopped = False
        self._holds_nothing = False  # the reader waits for a slot or an item: cancelling it loses nothing

    async def read(self, requests: AsyncIterator[pb.StreamVerifyRequest]) -> None:
        """Ends at the client's end of input, or with ShuttingDown once `stop` was called (the call then
        ends UNAVAILABLE: the client sends what was not answered elsewhere), or with the stream's error."""
        try:
            while not self.stopped:
                self._holds_nothing = True
                try:
                    await self.window.acquire()  # before reading: a full window reads nothing more
                    item = await anext(requests)
                except StopAsyncIteration:
                    self.window.release()
                    return
                except asyncio.CancelledError:
                    if self.stopped:  # by `stop`, holding no item
                        break
                    raise
                finally:
                    self._holds_nothing = False
                await self._admit(item.proof)
            raise ShuttingDown
        finally:
            self.reading = False
            self._maybe_end()

    def stop(self) -> None:
        """Read no more items. One the reader holds (waiting for room in the queue) is still answered."""
        self.stopped = True
        if self._holds_nothing and self.reader is not None:
            self.reader.cancel()

    async def _admit(self, proof: pb.Proof) -> None:
        settings, checks = self.servicer.settings, self.servicer.checks
        problems = convert.check_proof(proof, "proof", settings)
        if not problems and proof.id in self.in_flight:
            problems = [("proof.id", f"duplicate id {proof.id!r}: a proof with this id is still in flight")]
        if problems:
            self.servicer.metrics.invalid()
            self.results.put_nowait(convert.not_checked(proof.id, "invalid: " + convert.InvalidInput(problems).args[0]))
            return
        eff = convert.effective(proof.options, None, settings)
        call = Call("StreamVerify", self.request_id, time.time())
        job = None
        if not self.servicer.draining:
            with contextlib.suppress(ShuttingDown):  # the queue's room went to shutdown
                # A full queue holds this item (and, through the window, the stream) until there is room.
                job = await checks.submit_when_room(*convert.to_job(proof, eff, None))
        self.in_flight[proof.id] = job
        if job is None:
            self._deliver(proof, not_checked(_SHUTDOWN), eff, call)
            return
        proof_id = proof.id

        def done(future: asyncio.Future[Outcome]) -> None:
            if future.cancelled():  # the call is over: no result to write
                self.in_flight.pop(proof_id, None)
                self.window.release()
                self._maybe_end()
                return
            try:
                outcome = future.result()
            except Exception as exc:  # no outcome: still this id's answer, never a lost one
                outcome = Outcome(Verdict.REPL_ERROR, error=f"internal error while checking: {exc!r}"[:1000])
            self._deliver(proof, outcome, eff, call)

        job.future.add_done_callback(done)

    def _deliver(self, proof: pb.Proof, outcome: Outcome, eff: convert.Effective, call: Call) -> None:
        """Build the proof's result off this callback (large ones take many turns of the loop); the
        id stays in flight until its result is queued, and every id gets one."""
        if self.servicer.prooflog is not None:
            self.servicer.prooflog.record(call, proof, outcome, eff.trust)
        task = asyncio.ensure_future(self._answer(proof.id, outcome, eff.diagnostics))
        self.delivering.add(task)
        task.add_done_callback(self.delivering.discard)

    async def _answer(self, proof_id: str, outcome: Outcome, diagnostics: bool) -> None:
        try:
            self.servicer.metrics.result(outcome)
            log.debug("proof_done", proof_id=proof_id, repl_id=outcome.repl_id, verdict=outcome.verdict.name)
            limit = self.servicer._result_limit()
            result = await self.servicer._result(proof_id, outcome, diagnostics, limit)
        except Exception as exc:  # never a lost id: whatever failed, this proof is answered
            log.exception("result_failed", proof_id=proof_id)
            result = pb.ProofResult(
                id=proof_id, verdict=pb.VERDICT_REPL_ERROR, error=f"the server failed to answer: {exc!r}"[:1000]
            )
        finally:
            self.in_flight.pop(proof_id, None)
        self.results.put_nowait(result)
        self._maybe_end()

    def _maybe_end(self) -> None:
        if not self.reading and not self.in_flight:
            self.results.put_nowait(None)

    def cancel_all(self) -> None:
        for job in list(self.in_flight.values()):
            if job is not None:
                self.servicer.checks.cancel(job)
        for task in list(self.delivering):
            task.cancel()
