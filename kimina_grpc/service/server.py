"""The process: gRPC server, health, reflection, auth, and the shutdown sequence."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import shutil
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
from kimina_grpc.prooflog.metrics import ProofLogCollector
from kimina_grpc.prooflog.open import open_log
from kimina_grpc.prooflog.writer import ProofLog
from kimina_grpc.repl import ReplSpec, decode, reaper, sandbox
from kimina_grpc.repl.sandbox import OFF, Box, Limits, Resolved
from kimina_grpc.service.errors import DecodeErrors
from kimina_grpc.service.metrics import Metrics
from kimina_grpc.service.posture import BindError, Posture
from kimina_grpc.service.servicer import VerifierServicer
from kimina_grpc.settings import Settings
from kimina_grpc.supervisor.exports import AstExporter
from kimina_grpc.supervisor.pool import PoolSettings, Supervisor
from kimina_grpc.v1 import verifier_pb2, verifier_pb2_grpc

log = structlog.get_logger("kimina_grpc.server")


SERVICE_NAME = verifier_pb2.DESCRIPTOR.services_by_name["VerifierService"].full_name
LIVENESS = "liveness"
"""Health service name that is SERVING while the process works (Kubernetes livenessProbe)."""
READINESS = (SERVICE_NAME, "")
"""Health service names that are SERVING once pre-warm is done, until drain (readinessProbe)."""
_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_HEALTH_PORT_MAX_BYTES = 64 << 10
"""The health port's receive limit (a health request is a service name)."""


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires the API key on every RPC but health checks (probes send no metadata)."""

    def __init__(self, api_key: str) -> None:
        self._key = api_key.encode()

    def _authorised(self, metadata: tuple[tuple[str, str | bytes], ...]) -> bool:
        # Only the two names that can carry the key are read: other entries, `-bin` ones (arbitrary
        # bytes) above all, are none of auth's business.
        for key, value in metadata:
            if not isinstance(value, str):
                continue
            if key == "authorization" and value.startswith("Bearer "):
                text = value[len("Bearer ") :]
            elif key == "x-api-key":
                text = value
            else:
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

        async def deny(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong API key")

        # A request-streaming handler whatever the method: gRPC reads a unary request whole (up to
        # the receive limit, 64 MiB) before its handler runs; a stream's messages only when the
        # handler asks, and this one never does. An unauthenticated call costs a flow-control window.
        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        return grpc.stream_unary_rpc_method_handler(deny)


def limits(settings: Settings) -> Limits:
    return Limits(settings.max_repl_mem, settings.max_repl_file_size, settings.max_repl_procs)


def pool_settings(settings: Settings, box: Box = OFF) -> PoolSettings:
    argv, cwd = settings.repl_argv()
    return PoolSettings(
        spec=ReplSpec(
            argv=argv,
            cwd=cwd,
            max_memory_bytes=settings.max_repl_mem,
            max_file_bytes=settings.max_repl_file_size,
            max_processes=settings.max_repl_procs,
            box=box,
            max_reply_bytes=settings.max_reply_bytes,
            max_reply_items=settings.max_reply_messages,
        ),
        max_repls=settings.max_repls,
        max_repl_uses=settings.max_repl_uses,
        max_repl_uses_jitter=settings.repl_uses_jitter(),
        spare_repls=settings.spare_repls,
        max_repl_rss=settings.max_repl_rss,
        max_wait=settings.max_wait,
        max_queue=settings.max_queue,
        max_queue_bytes=settings.max_queue_bytes,
        max_concurrent_imports=settings.max_concurrent_imports,
        min_free_memory=settings.min_free_memory,
        import_cost_hint=settings.import_cost_hint,
        init_repls=settings.init_repls,
        min_timeout=settings.min_timeout,
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
            password=settings.cache_password(),
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


def resolve_box(settings: Settings) -> Resolved:
    """The sandbox for LEAN_SERVER_SANDBOX (bubblewrap is probed once, here)."""
    extra = [p for p in settings.sandbox_hide.split(":") if p]
    allow = tuple(n.strip() for n in settings.repl_env_allow.replace(",", " ").split())
    return sandbox.resolve(
        settings.sandbox,
        tmp_bytes=settings.sandbox_tmp_size,
        hide=sandbox.default_hide([*settings.secret_paths(), *extra]),
        env_allow=(*sandbox.DEFAULT_ENV_ALLOW, *allow),
        uid=settings.sandbox_uid,
        needs=_boxed_paths(settings),
    )


def _boxed_paths(settings: Settings) -> list[str]:
    """What the boxed commands read: their programs, absolute arguments and working directories."""
    commands = []
    with contextlib.suppress(ValueError):
        commands.append(settings.repl_argv())
    with contextlib.suppress(ValueError):
        argv, project = settings.ast_argv()
        commands.append((argv, str(project)))
    paths = []
    for argv, cwd in commands:
        program = shutil.which(argv[0]) if argv else None
        paths += [p for p in (program, cwd, *argv[1:]) if p and os.path.isabs(p)]
    return paths


def _unboxed_shared_cache(settings: Settings, resolved: Resolved) -> bool:
    return bool(settings.cache_url and settings.cache_enabled and not resolved.box.enabled)


def posture(settings: Settings, resolved: Resolved, api_key: str | None) -> Posture:
    warnings = [resolved.warning] if resolved.warning else []
    if _unboxed_shared_cache(settings, resolved):
        warnings.append(
            "shared cache with the sandbox off (LEAN_SERVER_CACHE_ALLOW_UNBOXED): a proof can reach Redis "
            "and write any verdict for every replica"
        )
    if settings.database_url and not resolved.box.enabled:
        warnings.append(
            "proof log with the sandbox off: a proof can reach the database (its password, its file) and write rows "
            "(LEAN_SERVER_DATABASE_URL, docs/prooflog.md)"
        )
    if api_key is None:
        warnings.append("authentication off (LEAN_SERVER_AUTH=off): anyone who reaches the port may call")
    return Posture(
        sandbox=resolved.box.name,
        auth_required=api_key is not None,
        tls=settings.tls_cert is not None,
        tls_client_auth=settings.tls_client_ca is not None,
        warnings=tuple(warnings),
    )


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


@dataclass
class App:
    settings: Settings
    server: grpc.aio.Server
    supervisor: Supervisor
    cache: CheckCache
    health: HealthServicer
    metrics: Metrics
    servicer: VerifierServicer
    port: int
    posture: Posture = field(default_factory=Posture)
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    metrics_port: int | None = None
    prooflog: ProofLog | None = None
    _readiness: asyncio.Task[None] | None = None
    _hurry: asyncio.Event = field(default_factory=asyncio.Event)

    def hurry(self) -> None:
        """Cut the drain period short (a second Ctrl-C); the grace for in-flight RPCs still applies."""
        self._hurry.set()

    async def start(self) -> None:
        if self.prooflog is not None:  # first: a database that cannot be used stops start-up (ProofLogError)
            await self.prooflog.start()
        if self.settings.metrics_port is not None:  # first: a port in use stops start-up with nothing begun
            host = self.settings.metrics_host or self.settings.host
            self.metrics_port = await self.metrics.serve(host, self.settings.metrics_port)
        for warning in self.posture.warnings:
            log.warning("insecure", warning=warning)
        await self.supervisor.start()
        for name in READINESS:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        self._readiness = asyncio.create_task(self._become_ready())
        log.info(
            "serving",
            port=self.port,
            host=self.settings.host,
            metrics_port=self.metrics_port,
            health_port=self.health_port,
            max_repls=self.settings.max_repls,
            sandbox=self.posture.sandbox,
            auth=self.posture.auth_required,
            tls=self.posture.tls,
            memory_accounting=self.posture.memory_accounting,
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
        """Readiness off and no new work (new calls UNAVAILABLE, new stream items NOT_CHECKED); running
        proofs get the drain period to finish, every other accepted proof is answered NOT_CHECKED on its
        open call; then the REPLs are killed and the server stops, its grace for sending those answers."""
        if self._readiness is not None:
            self._readiness.cancel()
        for name in READINESS:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        log.info("draining", seconds=self.settings.drain_seconds)
        self.servicer.drain()
        draining = asyncio.ensure_future(self.supervisor.drain(self.settings.drain_seconds))
        hurried = asyncio.ensure_future(self._hurry.wait())
        await asyncio.wait({draining, hurried}, return_when=asyncio.FIRST_COMPLETED)
        draining.cancel()  # hurried: running proofs are answered NOT_CHECKED by close() now
        hurried.cancel()
        await self.supervisor.close()
        await self.servicer.close_sessions()
        self.servicer.end_streams()
        await self.server.stop(self.settings.grace_seconds)
        if self.health_server is not None:
            await self.health_server.stop(0)
        await self.cache.close()
        if self.prooflog is not None:  # every answer is handed out: write (or spool) the last rows
            await self.prooflog.close()
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
    """The server, not started. Raises ValueError for an auth set-up that is refused and
    SandboxUnavailable when LEAN_SERVER_SANDBOX=bwrap cannot box, or a shared cache would be unboxed."""
    api_key = settings.resolved_api_key()
    resolved = resolve_box(settings)
    if _unboxed_shared_cache(settings, resolved) and not settings.cache_allow_unboxed:
        raise sandbox.SandboxUnavailable(
            "LEAN_SERVER_CACHE_URL with the sandbox off: a proof could reach Redis and write any verdict "
            "for every replica; box the REPLs (LEAN_SERVER_SANDBOX=bwrap), or set "
            "LEAN_SERVER_CACHE_ALLOW_UNBOXED=true to accept it"
        )
    box = resolved.box
    decode.configure(settings.max_decoding_bytes)
    supervisor = Supervisor(pool_settings(settings, box))
    cache = check_cache(settings, supervisor)
    interceptors: list[grpc.aio.ServerInterceptor] = [DecodeErrors()]
    if api_key:
        interceptors.insert(0, AuthInterceptor(api_key))
    server = grpc.aio.server(interceptors=interceptors, options=grpc_options(settings))
    exporter = None
    with contextlib.suppress(ValueError):  # no AST project: ExportAst answers FAILED_PRECONDITION
        argv, project = settings.ast_argv()
        exporter = AstExporter(
            argv,
            project,
            max_jobs=settings.max_ast_jobs,
            max_bytes=settings.max_message_bytes - (1 << 20),
            box=box,
            limits=limits(settings),
        )
    info = posture(settings, resolved, api_key)
    metrics = Metrics(supervisor, cache)
    metrics.posture(info)
    prooflog = open_log(settings, cache.environment)
    if prooflog is not None:
        metrics.registry.register(ProofLogCollector(prooflog))
    servicer = VerifierServicer(
        supervisor, cache, settings, metrics, exporter=exporter, posture=info, prooflog=prooflog
    )
    verifier_pb2_grpc.add_VerifierServiceServicer_to_server(servicer, server)
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
    credentials = _credentials(settings)
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises where it used to return 0
        port = 0
    if port == 0:
        raise BindError(f"cannot listen on {address}: the port is in use or the address is not this machine's")
    app = App(settings, server, supervisor, cache, health, metrics, servicer, port, info, prooflog=prooflog)
    if settings.health_port is not None:
        # Health only, no auth, no TLS: what a kubelet's gRPC probe can speak. It tells nothing but
        # SERVING or NOT_SERVING.
        health_address = f"{settings.host}:{settings.health_port}"
        if _in_use(settings.host, settings.health_port):
            raise BindError(f"cannot listen on {health_address} (LEAN_SERVER_HEALTH_PORT): the port is in use")
        # A health request is a service name: nothing bigger is read on this unauthenticated port.
        app.health_server = grpc.aio.server(
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", _HEALTH_PORT_MAX_BYTES)]
        )
        health_pb2_grpc.add_HealthServicer_to_server(health, app.health_server)
        try:
            app.health_port = app.health_server.add_insecure_port(health_address)
        except RuntimeError:
            app.health_port = 0
        if app.health_port == 0:
            raise BindError(f"cannot listen on {health_address} (LEAN_SERVER_HEALTH_PORT)")
    return app


def raise_open_files() -> None:
    """The soft limit on open files up to the hard one: connections, REPLs' sockets and pipes all
    take descriptors, and the usual soft limit (1024) is far below what a busy server holds."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log.debug("open_files_limit", soft=resource.getrlimit(resource.RLIMIT_NOFILE)[0], was=soft)


async def serve(settings: Settings, on_serving: Callable[[Settings, int], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down in order; `on_serving(settings, port)` once it serves."""
    app = create_app(settings)
    raise_open_files()
    # Orphans of `lake env`, of proofs and of killed boxes are reparented to us and reaped here;
    # and a process of the same uid (an unboxed REPL) cannot read our memory or environment.
    reaper.become_subreaper()
    sandbox.undumpable()
    reaping = asyncio.create_task(reaper.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    if on_serving is not None:
        on_serving(settings, app.port)
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
        reaping.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
