"""The result cache and in-flight dedupe (kimina_grpc/cache/): in memory, and shared through Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from kimina_grpc.settings.base import Group, OptionalSize, read_secret


class CacheSettings(Group):
    """The result cache and in-flight dedupe (kimina_grpc/cache/)."""

    cache_enabled: bool = True
    """In-flight dedupe and the result cache (identical proofs share one check, and `VALID`, `INVALID`,
    `SORRY` and `UNTRUSTED` results are kept); `false`: every proof is checked."""
    cache_max_bytes: OptionalSize = 256 << 20
    """Results kept in this server's memory (least recently used go first); `0` = none."""
    cache_max_entry_bytes: OptionalSize = 1 << 20
    """A result larger than this (info trees, tactics) is not stored; `0` = no limit."""
    cache_url: str | None = None
    """`redis://host:port/db` (or `rediss://`, `unix://`): a cache shared by every replica (besides the
    memory one)."""
    cache_password_file: Path | None = None
    """File holding Redis's password (a mounted Secret; or give it in the URL,
    `redis://:PASSWORD@host`); masked in the box."""
    cache_allow_unboxed: bool = False
    """Accept a shared (Redis) cache with the sandbox off, where a proof can reach Redis and write any
    verdict for every replica (a warning in `GetServerInfo`); else the server refuses to start."""
    cache_ttl: float = Field(7 * 86400, gt=0)
    """Seconds a result stays in Redis."""
    cache_timeout: float = Field(0.1, gt=0)
    """Seconds a Redis request may take before the proof goes to Lean without it."""
    cache_retry_seconds: float = Field(2.0, gt=0)
    """After a Redis failure, Redis is skipped this long, then tried again."""

    @field_validator("cache_url", mode="before")
    @classmethod
    def _cache_url(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_cache(self) -> CacheSettings:
        if self.cache_url is not None and not self.cache_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("LEAN_SERVER_CACHE_URL must be a redis://, rediss:// or unix:// URL")
        if self.cache_password_file is not None:
            self.cache_password()
        return self

    def cache_password(self) -> str | None:
        """The Redis password from CACHE_PASSWORD_FILE (None without one); ValueError when unreadable."""
        if self.cache_password_file is None:
            return None
        return read_secret(self.cache_password_file, "CACHE_PASSWORD_FILE")
