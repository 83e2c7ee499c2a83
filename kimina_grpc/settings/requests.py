"""What one request may ask and how much the server queues: timeouts, trust, and the bounds on code,
batches, queues, streams and replies."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kimina_grpc.settings.base import Group, Size


def _default_max_queue_bytes() -> int:
    import psutil

    return max(256 << 20, psutil.virtual_memory().total // 8)


class RequestSettings(Group):
    """Requests."""

    default_timeout: float = Field(60.0, gt=0)
    """Per-proof timeout default, in seconds."""
    default_trust: Literal["check", "audit", "judge"] = "check"
    """Trust level of proofs that set none: `check`, `audit`, `judge` (see [trust levels](trust.md) and the
    contract's `TrustLevel`; the last two need every proof to name its theorem: `theorem_name` or
    `statement`)."""
    max_timeout: float = Field(3600.0, gt=0)
    """Per-proof timeout bound, in seconds."""
    min_timeout: float = Field(0.1, ge=0)
    """The shortest check, in seconds: a smaller `timeout_seconds` is `INVALID_ARGUMENT` (a stream item:
    `NOT_CHECKED`); a proof whose caller's deadline leaves less is answered `NOT_CHECKED` without a REPL (a
    check cut shorter only kills a warm REPL, and its replacement pays the import; where imports are dear,
    as with Mathlib, raise it, e.g. to `1`)."""
    max_code_bytes: Size = Field(1 << 20, gt=0)
    """Largest `code`."""
    max_batch: int = Field(10_000, gt=0)
    """Most proofs in one `Verify`."""
    max_queue: int = Field(100_000, gt=0)
    """Queued proofs at most; past it `RESOURCE_EXHAUSTED` with retry info."""
    max_queue_bytes: Size = Field(
        default_factory=_default_max_queue_bytes,
        gt=0,
        json_schema_extra={"shown": "⅛ of the machine's memory (≥ 256M)"},
    )
    """Bytes of code queued at most over all callers (a count bound alone lets 1 MiB proofs fill the
    machine); past it `RESOURCE_EXHAUSTED` (a stream waits for room)."""
    stream_window: int = Field(64, gt=0)
    """Proofs per `StreamVerify` stream read and not yet answered (in flight, or results the client has not
    read)."""
    max_reply_bytes: Size = Field(32 << 20, gt=0)
    """Largest REPL reply read (e.g. `32M`): a REPL writing more is stopped, its proof `REPL_ERROR` (not
    retried). Reading and parsing a reply counts against the proof's timeout."""
    max_reply_messages: int = Field(10_000, ge=2)
    """Messages (and sorries, and tactics) kept per reply; the rest counted in a note, the verdict
    unchanged."""
    max_decoding_bytes: Size = Field(128 << 20, gt=0)
    """Bytes of large replies (over 128 KiB) parsed at once over the whole server; others wait, within their
    proof's timeout."""

    @model_validator(mode="after")
    def _check_timeouts(self) -> RequestSettings:
        if self.max_timeout < self.default_timeout:
            raise ValueError("LEAN_SERVER_DEFAULT_TIMEOUT must not exceed LEAN_SERVER_MAX_TIMEOUT")
        if self.default_timeout < self.min_timeout:
            raise ValueError("LEAN_SERVER_MIN_TIMEOUT must not exceed LEAN_SERVER_DEFAULT_TIMEOUT")
        return self
