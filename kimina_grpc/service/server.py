"""The process: gRPC server, health, reflection, auth, and the shutdown sequence."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from kimina_grpc.cache import CheckCache, MemoryStore, RedisStore, environment_id
from kimina_grpc.repl import ReplSpec
from kimina_grpc.service.metrics import Metrics
from kimina_grpc.service.servicer import VerifierServicer
from kimina_grpc.settings import Settings
from kimina_grpc.supervisor.ast import AstExporter
from kimina_grpc.supervisor.pool import PoolSettings, Supervisor
from kimina_grpc.v1 import verifier_pb2, verifier_pb2_grpc

log = structlog.get_logger("kimina_grpc.server")


class BindError(RuntimeError):
    """The listen address cannot be bound (in use, or not this machine's); the message is one line."""


SERVICE_NAME = verifier_pb2.DESCRIPTOR.services_by_name["VerifierService"].full_name
LIVENESS = "liveness"
"""Health service name that is SERVING while the process works (Kubernetes livenessProbe)."""
READINESS = (SERVICE_NAME, "")
"""Health service names that are SERVING once pre-warm is done, until drain (readinessProbe)."""
_HEALTH_PREFIX = "/grpc.health.v1.Health/"


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires the API key on every RPC but health checks (probes send no metadata)."""

    def __init__(self, api_key: str) -> None:
        self._key = api_key.encode()

    def _authorised(self, metadata: tuple[tuple[str, str | bytes], ...]) -> bool:
        for key, value in metadata:
            text = value.decode() if isinstance(value, bytes) else value
            if key == "authorization" and text.startswith("Bearer "):
                text = text[len("Bearer ") :]
            elif key != "x-api-key":
                continue
            if hmac.compare_digest(text.encode(), self._key):
                return True
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if details.method.startswith(_HEALTH_PREFIX) or self._authorised(tuple(details.invocation_metadata or ())):
            return await continuation(details)
        handler = await continuation(details)
        if handler is None:
            return handler

        async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong API key")

        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)


def pool_settings(settings: Settings) -> PoolSettings:
    argv, cwd = settings.repl_argv()
    return PoolSettings(
        spec=ReplSpec(argv=argv, cwd=cwd, max_memory_bytes=settings.max_repl_mem),
        max_repls=settings.max_repls,
        max_repl_uses=settings.max_repl_uses,
        max_repl_rss=settings.max_repl_rss,
        max_wait=settings.max_wait,
        max_queue=settings.max_queue,
        max_queue_bytes=settings.max_queue_bytes,
        max_concurrent_imports=settings.max_concurrent_imports,
        min_free_memory=settings.min_free_memory,
        import_cost_hint=settings.import_cost_hint,
        init_repls=settings.init_repls,
    )


def check_cache(settings: Settings, supervisor: Supervisor) -> CheckCache:
    """The cache layer in front of the pool; with LEAN_SERVER_CACHE_ENABLED=false it passes through."""
    argv, cwd = settings.repl_argv()
    return CheckCache(
        supervisor,
        environment_id(settings.lean_version, argv, cwd),
        enabled=settings.cache_enabled,
        memory=MemoryStore(settings.cache_max_bytes) if settings.cache_max_bytes else None,
        remote=RedisStore(
            settings.cache_url,
            ttl=settings.cache_ttl,
            timeout=settings.cache_timeout,
            retry_seconds=settings.cache_retry_seconds,
        )
        if settings.cache_url and settings.cache_enabled
        else None,
        max_entry_bytes=settings.cache_max_entry_bytes or (1 << 62),
    )


def grpc_options(settings: Settings) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.so_reuseport", 0),  # a second server must fail to bind, not share the port silently
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_seconds * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Without this, HTTP/2 windows let MiBs of a stream pile up before the reader's backpressure shows.
        ("grpc.http2.bdp_probe", 0),
    ]
    if settings.max_connection_age > 0:
        options.append(("grpc.max_connection_age_ms", int(settings.max_connection_age * 1000)))
        options.append(("grpc.max_connection_age_grace_ms", int(settings.grace_seconds * 1000)))
    return options


@dataclass
class App:
    settings: Settings
    server: grpc.aio.Server
    supervisor: Supervisor
    cache: CheckCache
    health: HealthServicer
    metrics: Metrics
    port: int
    metrics_port: int | None = None
    _readiness: asyncio.Task[None] | None = None
    _hurry: asyncio.Event = field(default_factory=asyncio.Event)

    def hurry(self) -> None:
        """Cut the drain period short (a second Ctrl-C); the grace for in-flight RPCs still applies."""
        self._hurry.set()

    async def start(self) -> None:
        await self.supervisor.start()
        for name in READINESS:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self.server.start()
        if self.settings.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.settings.host, self.settings.metrics_port)
        self._readiness = asyncio.create_task(self._become_ready())
        log.info(
            "serving",
            port=self.port,
            host=self.settings.host,
            metrics_port=self.metrics_port,
            max_repls=self.settings.max_repls,
        )

    async def _become_ready(self) -> None:
        """Readiness follows the pool both ways: ready once pre-warm is done, unready (with the
        reason logged) while the REPL cannot start or a pre-warm header fails, ready again when the
        cause is fixed. Liveness stays SERVING: a restart would not help."""
        serving: bool | None = None
        last = (-1, -1)
        while True:
            ready = self.supervisor.ready
            if not ready and serving is None:
                progress = self.supervisor.warmup_progress()
                if progress != last:
                    log.info("warming_up", done=progress[0], total=progress[1])
                    last = progress
            if ready != serving:
                status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
                for name in READINESS:
                    await self.health.set(name, status)
                if ready:
                    log.info("ready")
                elif serving is not None:
                    log.warning("not_ready", reason=self.supervisor.not_ready_reason)
                serving = ready
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Readiness off, keep serving for the drain period, stop with grace, kill every REPL."""
        if self._readiness is not None:
            self._readiness.cancel()
        for name in READINESS:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        log.info("draining", seconds=self.settings.drain_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), self.settings.drain_seconds)
        await self.server.stop(self.settings.grace_seconds)
        await self.supervisor.close()
        await self.cache.close()
        self.metrics.close()
        log.info("stopped")


def _in_use(host: str, port: int) -> bool:
    """Whether something already listens on host:port."""
    if port == 0:
        return False
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError:
        return False  # gRPC will say what is wrong with the address
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError:
            return True
    return False


def create_app(settings: Settings) -> App:
    supervisor = Supervisor(pool_settings(settings))
    cache = check_cache(settings, supervisor)
    interceptors = [AuthInterceptor(settings.api_key)] if settings.api_key else []
    server = grpc.aio.server(interceptors=interceptors, options=grpc_options(settings))
    exporter = None
    with contextlib.suppress(ValueError):  # no AST project: ExportAst answers FAILED_PRECONDITION
        argv, project = settings.ast_argv()
        exporter = AstExporter(
            argv, project, max_jobs=settings.max_ast_jobs, max_bytes=settings.max_message_bytes - (1 << 20)
        )
    metrics = Metrics(supervisor, cache)
    verifier_pb2_grpc.add_VerifierServiceServicer_to_server(
        VerifierServicer(supervisor, cache, settings, metrics, exporter), server
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
    address = f"{settings.host}:{settings.port}"
    if _in_use(settings.host, settings.port):  # asked first: gRPC core logs its own multi-line failure
        raise BindError(f"cannot listen on {address}: the port is in use")
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises where it used to return 0
        port = 0
    if port == 0:
        raise BindError(f"cannot listen on {address}: the port is in use or the address is not this machine's")
    return App(settings, server, supervisor, cache, health, metrics, port)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down in order."""
    app = create_app(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    await stop.wait()
    log.info("signal_received")

    def again() -> None:
        log.warning("signal_received_again", action="skipping the rest of the drain")
        app.hurry()

    for sig in (signal.SIGTERM, signal.SIGINT):
        # Keep handling signals: a second Ctrl-C must not raise KeyboardInterrupt into the shutdown.
        loop.add_signal_handler(sig, again)
    try:
        await app.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
