"""One place maps failures to statuses: the interceptor every call of the server goes through, whatever
service the handler belongs to and whatever shape it has (returning, yielding, writing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from kimina_grpc.service.errors import ErrorsToStatus
from kimina_grpc.supervisor.queue import QueueFull

from .helpers.server import running

SERVICE = "test.Faulty"
COUNTED = "test.Counted"


class Counts:
    def __init__(self) -> None:
        self.ends: list[tuple[str, str, grpc.StatusCode]] = []

    def rpc(self, method: str, kind: str, code: grpc.StatusCode, seconds: float) -> None:
        self.ends.append((method, kind, code))


async def _full(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise QueueFull(retry_after=7)


async def _yields_then_fails(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
    yield b"first"
    raise RuntimeError("a bug, with a secret in its message")


async def _writes_then_fails(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.write(b"first")
    raise QueueFull(retry_after=1)


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


def _handlers(service: str) -> grpc.GenericRpcHandler:
    identity = bytes  # the bytes are the message: a decoder that never fails
    return grpc.method_handlers_generic_handler(
        service,
        {
            "Full": grpc.unary_unary_rpc_method_handler(_full, identity, identity),
            "Yields": grpc.unary_stream_rpc_method_handler(_yields_then_fails, identity, identity),
            "Writes": grpc.unary_stream_rpc_method_handler(_writes_then_fails, identity, identity),
            "Echo": grpc.unary_unary_rpc_method_handler(_echo, identity, identity),
        },
    )


def _unary(ch: grpc.aio.Channel, path: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    return ch.unary_unary(path, request_serializer=None, response_deserializer=None)


def _stream(ch: grpc.aio.Channel, path: str) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
    return ch.unary_stream(path, request_serializer=None, response_deserializer=None)


async def test_any_handler_of_the_server_gets_the_one_table() -> None:
    counts = Counts()
    server = grpc.aio.server(interceptors=[ErrorsToStatus(counts, COUNTED)])
    server.add_generic_rpc_handlers((_handlers(SERVICE), _handlers(COUNTED)))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _unary(ch, f"/{SERVICE}/Full")(b"x")
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            status = status_pb2.Status.FromString(dict(info.value.trailing_metadata() or ())["grpc-status-details-bin"])
            retry = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(retry) and retry.retry_delay.seconds == 7

            for method in ("Yields", "Writes"):
                call = _stream(ch, f"/{SERVICE}/{method}")(b"x")
                got = []
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    async for item in call:
                        got.append(item)
                assert got == [b"first"], method  # what was sent before the failure arrives
                expected = grpc.StatusCode.INTERNAL if method == "Yields" else grpc.StatusCode.RESOURCE_EXHAUSTED
                assert info.value.code() == expected, method
                assert "secret" not in (info.value.details() or "")

            assert counts.ends == []  # only the named service is counted
            assert await _unary(ch, f"/{COUNTED}/Echo")(b"ok") == b"ok"
            with pytest.raises(grpc.aio.AioRpcError):
                await _unary(ch, f"/{COUNTED}/Full")(b"x")
            assert counts.ends == [
                ("Echo", "unary", grpc.StatusCode.OK),
                ("Full", "unary", grpc.StatusCode.RESOURCE_EXHAUSTED),
            ]
    finally:
        await server.stop(0)


async def test_health_watch_answers_undecodable_bytes_invalid_argument() -> None:
    async with running() as (_, ch):
        watch = _stream(ch, "/grpc.health.v1.Health/Watch")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in watch(b"\xff\xff\xff\xff"):
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a request message" in (info.value.details() or "")
