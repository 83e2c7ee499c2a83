"""The service under faults from outside: bytes that are not messages, metadata auth does not read,
clients that stop reading, idle metrics connections, SIGTERM in the middle of work (issue 17)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2

from kimina_grpc.service import metrics
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .test_server import proof, running, scrape

GARBAGE = b"\xff\xff\xff\xff"  # a field tag whose varint never ends: protobuf's DecodeError
VERIFIER = "/kimina_grpc.v1.VerifierService/"


async def test_undecodable_requests_are_invalid_argument_and_disturb_nothing() -> None:
    async with running(api_key="k") as (_, ch):
        auth = (("x-api-key", "k"),)
        for path in (VERIFIER + "Verify", VERIFIER + "GetServerInfo", "/grpc.health.v1.Health/Check"):
            raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary(
                path, request_serializer=None, response_deserializer=None
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await raw(GARBAGE, metadata=auth)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, path
            assert "not a request message" in (info.value.details() or "")

        # Mid-stream: what was accepted before the garbage is answered, then the stream ends.
        stream: grpc.aio.StreamStreamMultiCallable[bytes, pb.StreamVerifyResponse] = ch.stream_stream(
            VERIFIER + "StreamVerify", request_serializer=None, response_deserializer=pb.StreamVerifyResponse.FromString
        )

        async def items() -> AsyncIterator[bytes]:
            yield pb.StreamVerifyRequest(proof=proof("before", "  -- fake: sleep 0.3")).SerializeToString()
            yield GARBAGE

        call = stream(items(), metadata=auth)
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for response in call:
                got.append((response.result.id, response.result.verdict))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert got == [("before", pb.VERDICT_VALID)]

        stub = pb_grpc.VerifierServiceStub(ch)
        reply = await stub.Verify(pb.VerifyRequest(proofs=[proof("after", "")]), metadata=auth)
        assert reply.results[0].verdict == pb.VERDICT_VALID


async def test_binary_metadata_is_not_read_as_text_by_auth() -> None:
    async with running(api_key="k") as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        request = pb.VerifyRequest(proofs=[proof("a", "")])
        binary = ("trace-context-bin", b"\xff\xfe\x00\x80")  # not UTF-8, before the key
        reply = await stub.Verify(request, metadata=(binary, ("x-api-key", "k")))
        assert reply.results[0].verdict == pb.VERDICT_VALID
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Verify(request, metadata=(binary, ("authorization", "Bearer nope")))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Health stays exempt whatever the metadata.
        health = ch.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        assert (await health(health_pb2.HealthCheckRequest(service="liveness"), metadata=(binary,))).status == 1


async def test_idle_metrics_connections_take_no_thread_and_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "READ_TIMEOUT", 1.5, raising=False)
    async with running(metrics_port=0) as (app, _):
        assert app.metrics_port
        me = psutil.Process()
        threads = me.num_threads()
        idle = [await asyncio.open_connection("127.0.0.1", app.metrics_port) for _ in range(300)]
        await asyncio.sleep(0.3)
        print(f"\nmetrics: threads {threads} -> {me.num_threads()} with 300 idle connections")
        assert me.num_threads() <= threads + 2  # asyncio.to_thread below may add one
        assert "kimina_ready" in await asyncio.to_thread(scrape, app.metrics_port)
        # A half-sent request is no better than none: each is closed after READ_TIMEOUT.
        idle[0][1].write(b"GET /metrics HTTP/1.1\r\n")
        closed = await asyncio.gather(*(asyncio.wait_for(r.read(), 5) for r, _ in idle))
        assert closed == [b""] * 300
        for _, w in idle:
            w.close()
