"""The process: build the server from the settings (the pool, the cache, the servicer, the ports),
and run it until a signal, then shut it down in order."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

import grpc
import structlog
from grpc_health.v1 import health_pb2_grpc

from kimina_grpc.cache import CheckCache, MemoryStore, RedisStore, environment_id
from kimina_grpc.prooflog.metrics import ProofLogCollector
from kimina_grpc.prooflog.open import open_log
from kimina_grpc.repl import decode, reaper, sandbox
from kimina_grpc.repl.sandbox import Box, Limits
from kimina_grpc.service import exposure, ports
from kimina_grpc.service.app import App
from kimina_grpc.service.auth import AuthInterceptor
from kimina_grpc.service.errors import ErrorsToStatus
from kimina_grpc.service.health import LIVENESS, SERVICE_NAME, add_health
from kimina_grpc.service.metrics import Metrics
from kimina_grpc.service.servicer import VerifierServicer
from kimina_grpc.settings import Settings
from kimina_grpc.supervisor.config import PoolSettings
from kimina_grpc.supervisor.exports import AstExporter
from kimina_grpc.supervisor.pool import Supervisor
from kimina_grpc.v1 import verifier_pb2_grpc

__all__ = ["LIVENESS", "SERVICE_NAME", "App", "create_app", "serve"]

log = structlog.get_logger("kimina_grpc.server")


def limits(settings: Settings) -> Limits:
    return Limits(settings.max_repl_mem, settings.max_repl_file_size, settings.max_repl_procs)


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


def ast_exporter(settings: Settings, box: Box) -> AstExporter | None:
    """None without an AST project: ExportAst then answers FAILED_PRECONDITION."""
    try:
        argv, project = settings.ast_argv()
    except ValueError:
        return None
    return AstExporter(
        argv,
        project,
        max_jobs=settings.max_ast_jobs,
        max_bytes=settings.max_message_bytes - (1 << 20),
        box=box,
        limits=limits(settings),
    )


def create_app(settings: Settings) -> App:
    """The server, not started. Raises ValueError for an auth set-up that is refused and
    SandboxUnavailable when LEAN_SERVER_SANDBOX=bwrap cannot box, or a shared cache would be unboxed."""
    api_key = settings.resolved_api_key()
    resolved = exposure.resolve_box(settings)
    exposure.refuse_unsafe(settings, resolved)
    box = resolved.box
    decode.configure(settings.max_decoding_bytes)
    supervisor = Supervisor(PoolSettings.from_settings(settings, box))
    cache = check_cache(settings, supervisor)
    info = exposure.posture(settings, resolved, api_key)
    metrics = Metrics(supervisor, cache)
    metrics.posture(info)
    interceptors: list[grpc.aio.ServerInterceptor] = [ErrorsToStatus(metrics, SERVICE_NAME)]
    if api_key:
        interceptors.insert(0, AuthInterceptor(api_key))
    server = grpc.aio.server(interceptors=interceptors, options=ports.grpc_options(settings))
    prooflog = open_log(settings, cache.environment)
    if prooflog is not None:
        metrics.registry.register(ProofLogCollector(prooflog))
    servicer = VerifierServicer(
        supervisor, cache, settings, metrics, exporter=ast_exporter(settings, box), posture=info, prooflog=prooflog
    )
    verifier_pb2_grpc.add_VerifierServiceServicer_to_server(servicer, server)
    health = add_health(server, reflect=settings.reflection)
    port = ports.listen(server, settings)
    app = App(settings, server, supervisor, cache, health, metrics, servicer, port, info, prooflog=prooflog)
    if settings.health_port is not None:
        app.health_server, app.health_port = ports.health_only_server(settings, settings.health_port)
        health_pb2_grpc.add_HealthServicer_to_server(health, app.health_server)
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
