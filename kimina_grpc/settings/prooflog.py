"""The proof log (kimina_grpc/prooflog/, docs/prooflog.md): which database, and how rows reach it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from kimina_grpc.database_url import parse
from kimina_grpc.settings.base import Group, OptionalSize, read_secret


class ProofLogSettings(Group):
    """The proof log (kimina_grpc/prooflog/, docs/prooflog.md)."""

    database_url: str | None = Field(None, json_schema_extra={"shown": "unset (off)"})
    """The proof log: `postgresql://user@host:5432/db` or `sqlite:////abs/path.db` (SQLAlchemy's form:
    four slashes for an absolute path): every answered proof becomes a row there (unset = off, as in
    Kimina; [proof log](prooflog.md))."""
    database_password_file: Path | None = None
    """File holding the PostgreSQL password (a mounted Secret; or give it in the URL, which wins; never
    logged); masked in the box."""
    database_migrate: bool = False
    """Create or upgrade the log's tables at start (else `kimina-grpc db upgrade`)."""
    database_timeout: float = Field(5.0, gt=0)
    """Seconds to connect, and for one batch's write before its rows go to the spool."""
    database_retry_seconds: float = Field(2.0, gt=0)
    """After a failed write, batches go straight to the spool this long, then a write is tried again."""
    log_spool_dir: Path | None = Field(None, json_schema_extra={"shown": "~/.cache/kimina-grpc/prooflog-spool"})
    """Where rows wait while the database is away (written on the next start too)."""
    log_spool_max_bytes: OptionalSize = 1 << 30
    """Spool bound (e.g. `1G`); rows past it are dropped and counted (`0` = none)."""
    log_batch_size: int = Field(500, gt=0)
    """Rows per write."""
    log_flush_seconds: float = Field(0.25, gt=0)
    """How long a row may wait for its batch to fill, in seconds."""
    log_max_pending: int = Field(100_000, gt=0)
    """Rows waiting in memory at most (behind a slow database and spool); more are dropped and counted."""
    log_retention_days: float | None = Field(None, ge=0, json_schema_extra={"shown": "unset (keep all)"})
    """Delete rows older than this many days (at start, then hourly; unset or `0` = keep them all)."""

    @field_validator("database_url", "log_retention_days", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_database(self) -> ProofLogSettings:
        if self.database_url is not None:
            parse(self.database_url, self.database_password())  # its message names the variable, never the password
        return self

    def database_password(self) -> str | None:
        """The PostgreSQL password from DATABASE_PASSWORD_FILE (None without one); ValueError when unreadable."""
        if self.database_password_file is None:
            return None
        return read_secret(self.database_password_file, "DATABASE_PASSWORD_FILE")
