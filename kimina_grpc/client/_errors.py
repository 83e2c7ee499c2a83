"""Failed calls: the typed exceptions the clients raise, the translation from gRPC's status (with
its google.rpc details), and the retry policy (which failures are retried, and how long to wait)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import duration_pb2  # noqa: F401  (RetryInfo needs it registered)
from google.rpc import error_details_pb2, status_pb2
from tenacity import RetryCallState, wait_exponential


class KiminaError(Exception):
    """An RPC failed for a reason retrying does not mend."""

    def __init__(self, code: grpc.StatusCode, message: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(f"{code.name}: {message}" + "".join(f"\n  {d}" for d in details))
        self.code = code
        self.message = message
        self.details = details
        self.attempts = 1
        """Calls made before giving up (retries of UNAVAILABLE and RESOURCE_EXHAUSTED included)."""

    def __reduce__(self) -> tuple[Any, ...]:  # crosses processes (the fork-safe client's helper)
        return type(self), (self.code, self.message, self.details), {"attempts": self.attempts}


class InvalidArgument(KiminaError):
    """The server refused the input; `details` lists each broken rule as "field: why"."""


class Unauthenticated(KiminaError):
    """The API key is missing or wrong."""


KEY_SOURCES = "the client sends api_key=..., else $LEAN_SERVER_API_KEY"
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
_backoff = wait_exponential(multiplier=0.2, max=10)


def _status_details(err: grpc.RpcError) -> status_pb2.Status | None:
    for key, value in getattr(err, "trailing_metadata", lambda: None)() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def retry_delay(err: grpc.RpcError) -> float | None:
    """The server's suggested delay (google.rpc.RetryInfo), if it sent one."""
    status = _status_details(err)
    for detail in status.details if status else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def tried(exc: KiminaError, attempts: int) -> KiminaError:
    exc.attempts = attempts
    return exc


def translate(err: grpc.RpcError) -> KiminaError:
    """A typed exception for a non-retryable failure."""
    code: grpc.StatusCode = err.code()
    message: str = err.details() or ""
    if connection_lost(err):
        return KiminaError(grpc.StatusCode.UNAVAILABLE, "the connection to the server was lost mid-call")
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        status = _status_details(err)
        details: list[str] = []
        for detail in status.details if status else ():
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                details += [f"{v.field}: {v.description}" for v in bad.field_violations]
        return InvalidArgument(code, message, tuple(details))
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(code, f"{message} ({KEY_SOURCES})")
    return KiminaError(code, message)


def handshake_failed(details: str) -> bool:
    """A TLS handshake that failed: a set-up mistake (wrong CA, TLS against plaintext), not an outage."""
    return "handshake failed" in details.lower()


def connection_lost(err: grpc.RpcError) -> bool:
    """gRPC core's own INTERNAL for a message sent on a call whose connection just went away (the
    server killed mid-stream): an outage like UNAVAILABLE, not an error of the server's."""
    return err.code() is grpc.StatusCode.INTERNAL and (err.details() or "") == "Internal error from Core"


def is_retryable(exc: BaseException) -> bool:
    if not isinstance(exc, grpc.RpcError):
        return False
    return (exc.code() in RETRYABLE and not handshake_failed(exc.details() or "")) or connection_lost(exc)


def wait(state: RetryCallState) -> float:
    """tenacity's wait: the server's RetryInfo when it sent one, else exponential backoff."""
    exc = state.outcome.exception() if state.outcome else None
    hinted = retry_delay(exc) if isinstance(exc, grpc.RpcError) else None
    return hinted if hinted is not None else _backoff(state)


def reconnect_delay(failures: int) -> float:
    """Seconds before a stream's next attempt after `failures` broken ones in a row."""
    return min(10.0, 0.2 * 2.0**failures)
