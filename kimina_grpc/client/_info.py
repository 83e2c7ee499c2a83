"""`server_info()`'s typed result: GetServerInfoResponse as frozen dataclasses (field names and
meanings are the contract's; see GetServerInfoResponse in verifier.proto)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from kimina_grpc.v1 import verifier_pb2 as pb


@dataclass(frozen=True, slots=True)
class HeaderState:
    """The pool for one import header."""

    header: str
    label: str
    """The header, or "(no imports)"."""
    warm: int
    busy: int
    starting: int
    queued: int


@dataclass(frozen=True, slots=True)
class PoolCounters:
    """Pool events since start."""

    imports: int
    recycles: int
    kills: int
    crashes: int
    completed: int


@dataclass(frozen=True, slots=True)
class CacheState:
    """The result cache and in-flight dedupe."""

    enabled: bool
    backend: str
    remote_up: bool
    entries: int
    bytes: int
    hits: int
    misses: int
    joins: int
    backend_errors: int
    environment: str


@dataclass(frozen=True, slots=True)
class ProofLogState:
    """The proof log (LEAN_SERVER_DATABASE_URL): off, or where its rows stand."""

    enabled: bool
    backend: str
    up: bool
    written: int
    pending: int
    spooled: int
    dropped: int
    lag_seconds: float
    last_error: str


@dataclass(frozen=True, slots=True)
class SessionsState:
    """Interactive proof sessions (ProofSession)."""

    open: int
    max_sessions: int
    per_repl: int
    repls: int
    max_repls: int
    opened: int
    tactics: int
    restores: int
    restored_states: int
    timeouts: int


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the server runs and how its pool stands."""

    server_version: str
    lean_version: str
    """The Lean version it was configured with; the demo's says it runs the stand-in REPL, no Lean."""
    repl_command: str
    ready: bool
    not_ready_reason: str
    max_repls: int
    queued: int
    headers: tuple[HeaderState, ...]
    counters: PoolCounters
    cache: CacheState
    sandbox: str
    auth_required: bool
    tls: bool
    tls_client_auth: bool
    security_warnings: tuple[str, ...]
    memory_accounting: str
    """How a REPL's memory is counted: "process-tree" (every process of its box, sampled)."""
    proof_log: ProofLogState
    sessions: SessionsState


def _scalars(cls: Any, message: Any, **given: Any) -> Any:
    return cls(**{f.name: getattr(message, f.name) for f in fields(cls) if f.name not in given}, **given)


def server_info_from_proto(m: pb.GetServerInfoResponse) -> ServerInfo:
    info: ServerInfo = _scalars(
        ServerInfo,
        m,
        headers=tuple(_scalars(HeaderState, h) for h in m.headers),
        counters=_scalars(PoolCounters, m.counters),
        cache=_scalars(CacheState, m.cache),
        proof_log=_scalars(ProofLogState, m.proof_log),
        sessions=_scalars(SessionsState, m.sessions),
        security_warnings=tuple(m.security_warnings),
    )
    return info
