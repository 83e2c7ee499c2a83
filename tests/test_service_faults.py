"""The service under faults from outside: bytes that are not messages, metadata auth does not read,
clients that stop reading, idle metrics connections, SIGTERM in the middle of work (issue 17)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kimina_grpc.client import AsyncKiminaClient, Proof, Verdict
from kimina_grpc.service import metrics
from kimina_grpc.service.server import SERVICE_NAME, create_app
from kimina_grpc.testing import serve_process
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually
from .helpers.processes import children
from .helpers.server import proof, running, scrape, settings

GARBAGE = b"\xff\xff\xff\xff"  # a field tag whose varint never ends: protobuf's DecodeError
VERIFIER = "/kimina_grpc.v1.VerifierService/"


async def test_undecodable_requests_are_invalid_argument_and_disturb_nothing() -> None:
    async with running(api_key="k") as (app, ch):
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
        for method, kind in (("Verify", "unary"), ("GetServerInfo", "unary"), ("StreamVerify", "bidi_stream")):
            labels = {"grpc_service": SERVICE_NAME, "grpc_method": method, "grpc_type": kind}
            handled = app.metrics.registry.get_sample_value(
                "grpc_server_handled_total", {**labels, "grpc_code": "INVALID_ARGUMENT"}
            )
            assert handled == 1, method  # counted like any other bad request


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
        # Kept: time for the server to take the connections in. That no thread is started for one
        # shows nowhere to wait on.
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


async def test_a_stream_that_is_not_read_gets_no_more_than_its_window_checked() -> None:
    window, total = 8, 100
    env = {"LEAN_SERVER_STREAM_WINDOW": str(window), "LEAN_SERVER_MAX_REPLS": "2", "LEAN_SERVER_GRACE_SECONDS": "1"}
    big = "  -- fake: info " + "x" * 100_000  # a 100 kB result: HTTP/2 windows hold next to none of them
    with serve_process(env) as (proc, port):
        server = psutil.Process(proc.pid)
        # A small receive window on the client's side too (no BDP growth): what the client's transport
        # would take in is the client's memory, not the server's, and not what this test is about.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.http2.bdp_probe", 0)]) as ch:
            stub = pb_grpc.VerifierServiceStub(ch)
            await stub.Verify(pb.VerifyRequest(proofs=[proof("warm", "")]))
            rss = server.memory_info().rss
            written = 0

            async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
                nonlocal written
                for i in range(total):
                    written += 1
                    yield pb.StreamVerifyRequest(proof=proof(f"p{i}", big))

            call = stub.StreamVerify(requests())
            # Kept: the test reads nothing for a while, to show the server checks no more than its
            # window meanwhile (something that does not happen: there is no state to wait on).
            await asyncio.sleep(3.0)
            checked = (await stub.GetServerInfo(pb.GetServerInfoRequest())).counters.completed - 1
            grown = (server.memory_info().rss - rss) / 2**20
            print(f"\nunread stream: wrote {written}, checked {checked} (window {window}), server RSS +{grown:.1f} MiB")
            assert checked <= window + 2
            # Reading resumes the stream: every proof is answered once.
            got = [r.result.id async for r in call]
            assert sorted(got) == sorted(f"p{i}" for i in range(total))


async def test_sigterm_mid_stream_answers_every_accepted_id_and_exits_within_drain_and_grace() -> None:
    drain, grace = 2.0, 3.0
    env = {
        "LEAN_SERVER_MAX_REPLS": "2",
        "LEAN_SERVER_DRAIN_SECONDS": str(drain),
        "LEAN_SERVER_GRACE_SECONDS": str(grace),
    }
    with serve_process(env) as (proc, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.VerifierServiceStub(ch)
            await stub.Verify(pb.VerifyRequest(proofs=[proof("w1", "  -- fake: sleep 0.2"), proof("w2", "")]))
            draining = asyncio.Event()
            late = [f"late{i}" for i in range(5)]

            async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
                yield pb.StreamVerifyRequest(proof=proof("finishes", "  -- fake: sleep 1.2"))  # within the drain
                yield pb.StreamVerifyRequest(proof=proof("outlasts", "  -- fake: sleep 30"))  # past it
                for i in range(38):
                    yield pb.StreamVerifyRequest(proof=proof(f"queued{i}", f"  -- fake: sleep 1\n  -- {i}"))
                await draining.wait()
                for pid in late:  # read during the drain
                    yield pb.StreamVerifyRequest(proof=proof(pid, ""))
                await asyncio.sleep(3600)  # the client keeps its side open

            call = stub.StreamVerify(requests())
            answers: list[tuple[str, int, bool]] = []

            async def read() -> grpc.StatusCode:
                try:
                    async for response in call:
                        answers.append((response.result.id, response.result.verdict, response.result.retryable))
                except grpc.aio.AioRpcError as err:
                    return err.code()
                return grpc.StatusCode.OK

            async def held(running: int, queued: int) -> bool:
                info = await stub.GetServerInfo(pb.GetServerInfoRequest())
                return sum(h.busy for h in info.headers) == running and info.queued == queued

            async def not_ready() -> bool:
                check = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
                return bool((await health.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING)

            health = health_pb2_grpc.HealthStub(ch)
            reading = asyncio.create_task(read())
            await eventually(lambda: held(2, 38), what="two proofs running, the stream's others queued")
            # queued; distinct from earlier proofs, or the result cache would answer them at once
            batch = stub.Verify(pb.VerifyRequest(proofs=[proof(f"b{i}", f"  -- b{i}") for i in range(3)]))
            await eventually(lambda: held(2, 41), what="the batch queued")
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            await eventually(not_ready, what="the drain begun")
            draining.set()
            with pytest.raises(grpc.aio.AioRpcError) as info:  # a new call during the drain goes elsewhere
                await stub.Verify(pb.VerifyRequest(proofs=[proof("new", "")]), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert {(r.verdict, r.retryable) for r in (await batch).results} == {(pb.VERDICT_NOT_CHECKED, True)}
            assert await reading == grpc.StatusCode.UNAVAILABLE
            verdicts = {pid: (verdict, retryable) for pid, verdict, retryable in answers}
            assert len(answers) == len(verdicts) == 45  # every accepted id, once
            assert verdicts.pop("finishes") == (pb.VERDICT_VALID, False)
            assert set(verdicts.values()) == {(pb.VERDICT_NOT_CHECKED, True)}  # the client sends them elsewhere
            assert set(late) < set(verdicts)
        code = await asyncio.to_thread(proc.wait, drain + grace + 5)
        took = time.monotonic() - sent
        print(f"\nSIGTERM: {len(answers)} ids answered, exit {code} after {took:.1f} s (drain {drain}, grace {grace})")
        assert code == 0 and took < drain + grace


async def test_shutdown_answers_a_stream_item_waiting_for_room_in_a_full_queue() -> None:
    app = create_app(settings(max_repls=1, max_queue=2, drain_seconds=30))  # "runs" ends well within
    await app.start()
    stopping: asyncio.Task[None] | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
            stub = pb_grpc.VerifierServiceStub(ch)

            async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
                yield pb.StreamVerifyRequest(proof=proof("runs", "  -- fake: sleep 1"))
                for i in range(3):  # two fill the queue, the third waits for room
                    yield pb.StreamVerifyRequest(proof=proof(f"waits{i}", f"  -- {i}"))  # distinct: no dedupe
                await asyncio.sleep(3600)  # keeps the client's side open

            call = stub.StreamVerify(requests())
            sup = app.supervisor

            def settled() -> bool:  # one running, two queued, the third waiting for room
                busy = sum(h.busy for h in sup.state().headers)
                return busy == 1 and sup.queued == 2 and sup.queue.waiting_for_room == 1

            await eventually(settled, what="one proof running, two queued, one waiting for room")
            stopping = asyncio.create_task(app.stop())
            answers = {}
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for response in call:
                    answers[response.result.id] = response.result.verdict
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert answers == {
                "runs": pb.VERDICT_VALID,
                **{f"waits{i}": pb.VERDICT_NOT_CHECKED for i in range(3)},
            }
    finally:
        await (stopping or app.stop())
    assert children() == []


async def test_the_client_stream_survives_its_server_shutting_down() -> None:
    apps = [create_app(settings(max_repls=1, drain_seconds=0.3)) for _ in range(2)]
    for app in apps:
        await app.start()
    stopped = None
    try:
        target = ",".join(f"127.0.0.1:{app.port}" for app in apps)
        async with AsyncKiminaClient(target, max_attempts=10) as client:
            await client.verify("theorem w : True := trivial")
            body = "theorem t : True := by\n  -- fake: sleep 0.05\n  trivial"
            proofs = [Proof(f"s{i}", f"{body}\n-- {i}") for i in range(40)]
            got = []
            async for result in client.verify_stream(proofs, window=8):
                got.append((result.id, result.verdict))
                if len(got) == 5:  # the server of the stream goes away: queued proofs answered retryable
                    stopped = next(app for app in apps if app.servicer.open_streams)
                    await stopped.stop()
        assert sorted(got) == sorted((p.id, Verdict.VALID) for p in proofs)
    finally:
        for app in apps:
            if app is not stopped:
                await app.stop()
