"""GetServerInfo's answer, built from snapshots: the pool's state, the cache's and the proof log's
counters, the sessions' message, the settings and the posture. Nothing here reads a live object."""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version

from kimina_grpc.cache.layer import CacheStats
from kimina_grpc.prooflog.writer import LogState
from kimina_grpc.service.posture import Posture
from kimina_grpc.settings import Settings
from kimina_grpc.supervisor.state import HeaderStats, PoolState
from kimina_grpc.v1 import verifier_pb2 as pb

NO_IMPORTS = "(no imports)"
"""GetServerInfo's label for the empty header."""


def server_version() -> str:
    with contextlib.suppress(PackageNotFoundError):
        return version("kimina_grpc")
    return "unknown"


def repl_command(settings: Settings) -> str:
    """The REPL's command line as a shell would read it, or why there is none."""
    try:
        argv, _ = settings.repl_argv()
    except ValueError as exc:
        return f"(none: {exc})"
    return shlex.join(argv)


def server_info(
    pool: PoolState,
    *,
    not_ready_reason: str,
    cache: CacheStats,
    proof_log: LogState | None,
    sessions: pb.SessionsState,
    settings: Settings,
    posture: Posture,
) -> pb.GetServerInfoResponse:
    """`proof_log` is None when no proof log is configured."""
    return pb.GetServerInfoResponse(
        proof_log=proof_log_state(proof_log),
        server_version=server_version(),
        lean_version=settings.lean_version,
        repl_command=repl_command(settings),
        ready=pool.ready,
        not_ready_reason=not_ready_reason,
        max_repls=settings.max_repls,
        queued=pool.queued,
        headers=[header_state(h) for h in pool.headers],
        counters=pb.PoolCounters(
            imports=pool.imports,
            recycles=pool.recycles,
            kills=pool.kills,
            crashes=pool.crashes,
            completed=pool.completed,
            warm_swaps=pool.warm_swaps,
            cold_swaps=pool.cold_swaps,
        ),
        sandbox=posture.sandbox,
        auth_required=posture.auth_required,
        tls=posture.tls,
        tls_client_auth=posture.tls_client_auth,
        security_warnings=posture.warnings,
        memory_accounting=posture.memory_accounting,
        sessions=sessions,
        cache=cache_state(cache),
    )


def header_state(h: HeaderStats) -> pb.HeaderState:
    return pb.HeaderState(
        header=h.header,
        label=h.header or NO_IMPORTS,
        warm=h.warm,
        busy=h.busy,
        starting=h.starting,
        queued=h.queued,
        spares=h.spares,
    )


def cache_state(cache: CacheStats) -> pb.CacheState:
    return pb.CacheState(
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
    )


def proof_log_state(state: LogState | None) -> pb.ProofLogState:
    if state is None:
        return pb.ProofLogState(backend="off")
    return pb.ProofLogState(**asdict(state))
