"""The one place where domain failures become gRPC statuses (`status_of`, used by the one interceptor
every call goes through), and where every RPC's end is counted. Handlers raise; this maps."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, Protocol, TypeAlias

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from kimina_grpc.service.convert import InvalidInput
from kimina_grpc.service.sessions import IdleExpired
from kimina_grpc.sessions import SessionsFull
from kimina_grpc.supervisor.queue import QueueFull, ShuttingDown

log = structlog.get_logger("kimina_grpc.service")

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class NotConfigured(Exception):
    """The server was not set up for this call."""


def _rich(code: grpc.StatusCode, rpc_code: int, message: str, detail: Any | None) -> grpc.Status:
    status = status_pb2.Status(code=rpc_code, message=message)
    if detail is not None:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    result: grpc.Status = rpc_status.to_status(status)
    return result


def status_of(exc: BaseException) -> grpc.Status:
    if isinstance(exc, InvalidInput):
        return _rich(grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT, str(exc)[:4000], exc.bad_request())
    if isinstance(exc, QueueFull):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(exc.retry_after * 1e9))
        return _rich(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            code_pb2.RESOURCE_EXHAUSTED,
            f"{exc}; retry in {exc.retry_after:.0f} s",
            error_details_pb2.RetryInfo(retry_delay=delay),
        )
    if isinstance(exc, SessionsFull):
        return _rich(grpc.StatusCode.RESOURCE_EXHAUSTED, code_pb2.RESOURCE_EXHAUSTED, str(exc), None)
    if isinstance(exc, IdleExpired):
        return _rich(grpc.StatusCode.DEADLINE_EXCEEDED, code_pb2.DEADLINE_EXCEEDED, str(exc), None)
    if isinstance(exc, NotConfigured):
        return _rich(grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION, str(exc), None)
    if isinstance(exc, ShuttingDown):
        return _rich(grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE, "the server is shutting down", None)
    log.exception("internal_error", exc_info=exc)
    return _rich(grpc.StatusCode.INTERNAL, code_pb2.INTERNAL, "internal server error", None)


class RpcCounter(Protocol):
    def rpc(self, method: str, kind: str, code: grpc.StatusCode, seconds: float) -> None: ...


class _Call:
    """One RPC's end: map its failure to a status, and count it (when the call is counted) either way."""

    def __init__(self, method: str, kind: str, counter: RpcCounter | None) -> None:
        self.method, self.kind, self.counter = method, kind, counter
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()

    async def fail(self, context: Context, exc: BaseException) -> NoReturn:
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):  # the client cancelled or its deadline passed
            self.code = grpc.StatusCode.CANCELLED
            raise exc
        if isinstance(exc, grpc.aio.AbortError):
            self.code = context.code() or grpc.StatusCode.UNKNOWN
            raise exc
        status = status_of(exc)
        self.code = status.code
        await context.abort_with_status(status)
        raise AssertionError("unreachable")  # abort raises

    def done(self) -> None:
        if self.counter is not None:
            self.counter.rpc(self.method, self.kind, self.code, time.perf_counter() - self.started)


class _Undecodable:
    """What request bytes that are not the method's message decode to, so that the call, not gRPC
    (UNKNOWN for a unary request, the handler's own failure mid-stream), answers INVALID_ARGUMENT."""

    __slots__ = ("error",)

    def __init__(self, error: InvalidInput) -> None:
        self.error = error


def _tolerant(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def tolerant(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:  # protobuf's DecodeError (or any decoder's): the caller's bytes
            return _Undecodable(InvalidInput([("request", f"the bytes are not a request message: {exc}"[:500])]))

    return tolerant


def _decoded_one(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise request.error
    return request


async def _decoded(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, _Undecodable):
            raise request.error  # a stream handler maps it after answering what it accepted
        yield request


Start: TypeAlias = Callable[[], _Call]


def _answering(fn: Callable[..., Awaitable[Any]], decoded: Callable[[Any], Any], start: Start) -> Callable[..., Any]:
    """A handler that returns its answer (a unary response, or None after writing a stream)."""

    async def call(request: Any, context: Context) -> Any:
        end = start()
        try:
            return await fn(decoded(request), context)
        except (Exception, asyncio.CancelledError) as exc:
            await end.fail(context, exc)
        finally:
            end.done()

    return call


def _yielding(fn: Callable[..., AsyncIterator[Any]], decoded: Callable[[Any], Any], start: Start) -> Callable[..., Any]:
    """A handler that yields its stream of answers."""

    async def call(request: Any, context: Context) -> AsyncIterator[Any]:
        end = start()
        try:
            async for item in fn(decoded(request), context):
                yield item
        except (Exception, asyncio.CancelledError, GeneratorExit) as exc:
            await end.fail(context, exc)
        finally:
            end.done()

    return call


_KINDS = (
    # (the handler's attribute, how its request arrives, gRPC's constructor, the metrics' grpc_type)
    ("unary_unary", _decoded_one, grpc.unary_unary_rpc_method_handler, "unary"),
    ("unary_stream", _decoded_one, grpc.unary_stream_rpc_method_handler, "server_stream"),
    ("stream_unary", _decoded, grpc.stream_unary_rpc_method_handler, "client_stream"),
    ("stream_stream", _decoded, grpc.stream_stream_rpc_method_handler, "bidi_stream"),
)


class ErrorsToStatus(grpc.aio.ServerInterceptor):
    """Every call of the server ends here: request bytes that do not decode answer INVALID_ARGUMENT,
    and whatever a handler raises becomes its status through `status_of` (handlers raise domain errors
    and never build statuses). The calls of the service named `counted` are counted in `metrics`."""

    def __init__(self, metrics: RpcCounter | None = None, counted: str = "") -> None:
        self._metrics, self._counted = metrics, counted

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        service, _, method = details.method.lstrip("/").rpartition("/")
        counter = self._metrics if service == self._counted else None
        for attribute, decoded, build, kind in _KINDS:
            fn = getattr(handler, attribute)
            if fn is None:
                continue

            def start(kind: str = kind) -> _Call:
                return _Call(method, kind, counter)

            if inspect.isasyncgenfunction(fn):
                wrapped = _yielding(fn, decoded, start)
            elif inspect.iscoroutinefunction(fn):
                wrapped = _answering(fn, decoded, start)
            else:
                return handler  # a synchronous handler: left as gRPC runs it
            result: grpc.RpcMethodHandler[Any, Any] = build(
                wrapped, _tolerant(handler.request_deserializer), handler.response_serializer
            )
            return result
        return handler
