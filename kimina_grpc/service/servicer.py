"""VerifierService: validate, translate, hand to the cache layer (in front of the supervisor), translate back."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import uuid
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeAlias

import grpc
import structlog

from kimina_grpc.cache import CheckCache, Ticket
from kimina_grpc.service import convert
from kimina_grpc.service.errors import NotConfigured, streaming, unary
from kimina_grpc.service.metrics import Metrics
from kimina_grpc.settings import Settings
from kimina_grpc.supervisor.ast import AstExporter
from kimina_grpc.supervisor.jobs import Outcome
from kimina_grpc.supervisor.pool import Supervisor
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

log = structlog.get_logger("kimina_grpc.service")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

# Leave the caller this much of its deadline to receive the answers.
_DEADLINE_MARGIN = 0.25
NO_IMPORTS = "(no imports)"
"""GetServerInfo's label for the empty header."""


def _server_version() -> str:
    with contextlib.suppress(PackageNotFoundError):
        return version("kimina_grpc")
    return "unknown"


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
        exporter: AstExporter | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.checks = checks
        self.settings = settings
        self.metrics = metrics
        self.exporter = exporter

    @unary
    async def Verify(self, request: pb.VerifyRequest, context: Context) -> pb.VerifyResponse:
        structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex[:12], rpc="Verify")
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
        for p, o in zip(request.proofs, outcomes, strict=True):
            self.metrics.result(o)
            log.debug("proof_done", proof_id=p.id, repl_id=o.repl_id, verdict=o.verdict.name, seconds=o.time_seconds)
        log.info("verify_done", proofs=len(outcomes))
        return pb.VerifyResponse(
            results=[
                convert.to_result(p.id, o, eff.diagnostics)
                for p, o, eff in zip(request.proofs, outcomes, effs, strict=True)
            ]
        )

    @streaming
    async def StreamVerify(
        self, request_iterator: AsyncIterator[pb.StreamVerifyRequest], context: Context
    ) -> AsyncIterator[pb.StreamVerifyResponse]:
        structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex[:12], rpc="StreamVerify")
        stream = _Stream(self.checks, self.settings, self.metrics)
        reader = asyncio.create_task(stream.read(request_iterator))
        try:
            while True:
                result = await stream.results.get()
                if result is None:
                    break
                yield pb.StreamVerifyResponse(result=result)
            await reader  # re-raises a reader failure
        finally:
            reader.cancel()
            stream.cancel_all()

    @unary
    async def ExportAst(self, request: pb.ExportAstRequest, context: Context) -> pb.ExportAstResponse:
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

    @unary
    async def GetServerInfo(self, request: pb.GetServerInfoRequest, context: Context) -> pb.GetServerInfoResponse:
        state = self.supervisor.state()
        cache = self.checks.stats()
        try:
            argv, _ = self.settings.repl_argv()
            command = shlex.join(argv)
        except ValueError as exc:
            command = f"(none: {exc})"
        return pb.GetServerInfoResponse(
            server_version=_server_version(),
            lean_version=self.settings.lean_version,
            repl_command=command,
            ready=state.ready,
            not_ready_reason=self.supervisor.not_ready_reason,
            max_repls=self.settings.max_repls,
            queued=state.queued,
            headers=[
                pb.HeaderState(
                    header=h.header,
                    label=h.header or NO_IMPORTS,
                    warm=h.warm,
                    busy=h.busy,
                    starting=h.starting,
                    queued=h.queued,
                )
                for h in state.headers
            ],
            counters=pb.PoolCounters(
                imports=state.imports,
                recycles=state.recycles,
                kills=state.kills,
                crashes=state.crashes,
                completed=state.completed,
            ),
            cache=pb.CacheState(
                enabled=cache.enabled,
                backend=cache.backend,
                remote_up=cache.remote_up,
                entries=cache.entries,
                bytes=cache.bytes,
                hits=cache.hits,
                misses=cache.misses,
                joins=cache.joins,
                backend_errors=cache.backend_errors,
                environment=cache.environment,
            ),
        )


class _Stream:
    """One StreamVerify call: at most `stream_window` proofs in flight; the reader stops reading the
    request stream while the window is full, so HTTP/2 flow control slows the client down."""

    def __init__(self, checks: CheckCache, settings: Settings, metrics: Metrics) -> None:
        self.checks = checks
        self.settings = settings
        self.metrics = metrics
        self.window = asyncio.Semaphore(settings.stream_window)
        self.in_flight: dict[str, Ticket] = {}
        self.results: asyncio.Queue[pb.ProofResult | None] = asyncio.Queue()
        self.reading = True

    async def read(self, requests: AsyncIterator[pb.StreamVerifyRequest]) -> None:
        try:
            while True:
                await self.window.acquire()  # before reading: a full window reads nothing more
                try:
                    item = await anext(requests)
                except StopAsyncIteration:
                    self.window.release()
                    break
                await self._admit(item.proof)
        finally:
            self.reading = False
            self._maybe_end()

    async def _admit(self, proof: pb.Proof) -> None:
        problems = convert.check_proof(proof, "proof", self.settings)
        if not problems and proof.id in self.in_flight:
            problems = [("proof.id", f"duplicate id {proof.id!r}: a proof with this id is still in flight")]
        if problems:
            self.window.release()
            self.metrics.invalid()
            self.results.put_nowait(convert.not_checked(proof.id, "invalid: " + convert.InvalidInput(problems).args[0]))
            return
        eff = convert.effective(proof.options, None, self.settings)
        # A full queue holds this item (and, through the window, the stream) until there is room.
        job = await self.checks.submit_when_room(*convert.to_job(proof, eff, None))
        self.in_flight[proof.id] = job
        proof_id, diagnostics = proof.id, eff.diagnostics

        def done(future: asyncio.Future[Outcome]) -> None:
            self.in_flight.pop(proof_id, None)
            self.window.release()
            if not future.cancelled():
                outcome = future.result()
                self.metrics.result(outcome)
                log.debug("proof_done", proof_id=proof_id, repl_id=outcome.repl_id, verdict=outcome.verdict.name)
                self.results.put_nowait(convert.to_result(proof_id, outcome, diagnostics))
            self._maybe_end()

        job.future.add_done_callback(done)

    def _maybe_end(self) -> None:
        if not self.reading and not self.in_flight:
            self.results.put_nowait(None)

    def cancel_all(self) -> None:
        for job in list(self.in_flight.values()):
            self.checks.cancel(job)
