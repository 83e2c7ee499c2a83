"""The log as the settings describe it."""

from __future__ import annotations

import socket
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from kimina_grpc.database_url import Target, parse
from kimina_grpc.prooflog.backends import backend_for
from kimina_grpc.prooflog.record import Origin
from kimina_grpc.prooflog.spool import Spool
from kimina_grpc.prooflog.writer import ProofLog, Tuning
from kimina_grpc.settings import Settings

DEFAULT_SPOOL = Path.home() / ".cache" / "kimina-grpc" / "prooflog-spool"


def target(settings: Settings) -> Target | None:
    if not settings.database_url:
        return None
    return parse(settings.database_url, settings.database_password())


def _version() -> str:
    try:
        return version("kimina_grpc")
    except PackageNotFoundError:
        return "unknown"


def open_log(settings: Settings, environment: str) -> ProofLog | None:
    """None when LEAN_SERVER_DATABASE_URL is unset. Not started: `await log.start()`."""
    t = target(settings)
    if t is None:
        return None
    spool = Spool(settings.log_spool_dir or DEFAULT_SPOOL, settings.log_spool_max_bytes or (1 << 62))
    tuning = Tuning(
        batch_size=settings.log_batch_size,
        flush_seconds=settings.log_flush_seconds,
        max_pending=settings.log_max_pending,
        timeout=settings.database_timeout,
        retry_seconds=settings.database_retry_seconds,
        retention_days=settings.log_retention_days or None,
        migrate=settings.database_migrate,
    )
    origin = Origin(environment, _version(), socket.gethostname())
    return ProofLog(backend_for(t, settings.database_timeout), spool, origin, t.shown, tuning)
