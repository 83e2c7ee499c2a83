"""The one place where domain failures become gRPC statuses, and where every RPC's end is counted. Handlers
raise; this maps."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

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

T = TypeVar("T")


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


class _Call:
    """One RPC's end: map its failure to a status, and count it (servicer.metrics) either way."""

    def __init__(self, servicer: Any, method: str, kind: str) -> None:
        self.servicer, self.method, self.kind = servicer, method, kind
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()

    async def fail(self, context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> NoReturn:
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
        self.servicer.metrics.rpc(self.method, self.kind, self.code, time.perf_counter() - self.started)


def unary(
    fn: Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[T]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> T:
        call = _Call(self, fn.__name__, "unary")
        try:
            return await fn(self, _decoded_one(request), context)
        except (Exception, asyncio.CancelledError) as exc:
            await call.fail(context, exc)
        finally:
            call.done()

    wrapper.maps_undecodable = True  # type: ignore[attr-defined]
    return wrapper


def streaming(
    fn: Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[T]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[T]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[T]:
        call = _Call(self, fn.__name__, "bidi_stream")
        try:
            async for item in fn(self, _decoded(request), context):
                yield item
        except (Exception, asyncio.CancelledError, GeneratorExit) as exc:
            await call.fail(context, exc)
        finally:
            call.done()

    wrapper.maps_undecodable = True  # type: ignore[attr-defined]
    return wrapper


class _Undecodable:
    """What request bytes that are not the method's message decode to, so that the handler, not gRPC
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


class DecodeErrors(grpc.aio.ServerInterceptor):
    """Request bytes that do not decode answer INVALID_ARGUMENT, for every service of the server."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        decode, encode = _tolerant(handler.request_deserializer), handler.response_serializer
        if handler.unary_unary is not None and inspect.iscoroutinefunction(handler.unary_unary):
            uu: Callable[..., Any] = handler.unary_unary
            if getattr(uu, "maps_undecodable", False):  # `unary` above answers (and counts) it itself
                return grpc.unary_unary_rpc_method_handler(uu, decode, encode)

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                if isinstance(request, _Undecodable):
                    await context.abort_with_status(status_of(request.error))
                return await uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, decode, encode)
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            us: Callable[..., Any] = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                if isinstance(request, _Undecodable):
                    await context.abort_with_status(status_of(request.error))
                async for response in us(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(unary_stream, decode, encode)
        if handler.stream_unary is not None and inspect.iscoroutinefunction(handler.stream_unary):
            su: Callable[..., Any] = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                try:
                    return await su(_decoded(requests), context)
                except InvalidInput as exc:  # a handler that does not map errors itself
                    await context.abort_with_status(status_of(exc))

            return grpc.stream_unary_rpc_method_handler(stream_unary, decode, encode)
        if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
            ss: Callable[..., Any] = handler.stream_stream
            if getattr(ss, "maps_undecodable", False):  # `streaming` above: no second layer per message
                return grpc.stream_stream_rpc_method_handler(ss, decode, encode)

            async def stream_stream(
                requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                try:
                    async for response in ss(_decoded(requests), context):
                        yield response
                except InvalidInput as exc:
                    await context.abort_with_status(status_of(exc))

            return grpc.stream_stream_rpc_method_handler(stream_stream, decode, encode)
        return handler  # a synchronous handler: left as gRPC runs it
