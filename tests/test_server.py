"""The real gRPC server on 127.0.0.1:0 with the stand-in REPL."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import psutil
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import generate_latest

from kimina_grpc.service.server import LIVENESS, SERVICE_NAME, create_app
from kimina_grpc.testing import serve_process
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually
from .helpers.processes import children
from .helpers.server import proof, running, scrape, settings, threaded_app

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_verdicts_end_to_end_in_input_order() -> None:
    async with running(max_repl_mem="300M") as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        proofs = [
            proof("valid", ""),
            proof("invalid", "  -- fake: error bad tactic"),
            proof("sorry", "  -- fake: sorry"),
            proof("timeout", "  -- fake: hang", timeout_seconds=0.3),
            proof("oom", "  -- fake: alloc 500"),
            proof("crash", "  -- fake: crash 3"),
        ]
        reply = await stub.Verify(pb.VerifyRequest(proofs=proofs, options=pb.ProofOptions(diagnostics=True)))
        got = [(r.id, pb.Verdict.Name(r.verdict)) for r in reply.results]
        assert got == [
            ("valid", "VERDICT_VALID"),
            ("invalid", "VERDICT_INVALID"),
            ("sorry", "VERDICT_SORRY"),
            ("timeout", "VERDICT_TIMEOUT"),
            ("oom", "VERDICT_OUT_OF_MEMORY"),
            ("crash", "VERDICT_REPL_ERROR"),
        ]
        invalid = reply.results[1]
        # The file: "import A", a blank line, the theorem, the directive: Lean's message is on line 4.
        assert [(m.start.line, m.text, m.severity) for m in invalid.messages] == [(4, "bad tactic", pb.SEVERITY_ERROR)]
        assert reply.results[2].sorries[0].start.line == 4
        assert reply.results[3].time_seconds >= 0.3 and "timeout" in reply.results[3].error
        assert "exit code 3" in reply.results[5].error and reply.results[5].diagnostics.attempts == 2
        assert reply.results[0].diagnostics.repl_id and not reply.results[0].diagnostics.fresh_repl


async def test_stream_results_come_as_they_finish() -> None:
    # Two warm REPLs: "fast" runs beside "slow" at once (two cold starts could end more than slow's
    # 0.6 s apart on a loaded machine, and fast would then finish last).
    async with running(init_repls={"import A": 2}) as (app, ch):
        await eventually(lambda: app.supervisor.ready, what="both REPLs warm")
        stub = pb_grpc.VerifierServiceStub(ch)

        async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
            yield pb.StreamVerifyRequest(proof=proof("slow", "  -- fake: sleep 0.6"))
            yield pb.StreamVerifyRequest(proof=proof("fast", ""))
            yield pb.StreamVerifyRequest(proof=pb.Proof(id="", code="x"))  # invalid: answered, stream goes on
            yield pb.StreamVerifyRequest(proof=proof("dup", "  -- fake: sleep 0.3"))
            yield pb.StreamVerifyRequest(proof=proof("dup", ""))  # still in flight: refused

        ids = [(r.result.id, pb.Verdict.Name(r.result.verdict)) async for r in stub.StreamVerify(requests())]
        assert ids.index(("fast", "VERDICT_VALID")) < ids.index(("slow", "VERDICT_VALID"))
        assert ("", "VERDICT_NOT_CHECKED") in ids
        assert ids.count(("dup", "VERDICT_NOT_CHECKED")) == 1 and ids.count(("dup", "VERDICT_VALID")) == 1
        assert len(ids) == 5


async def test_stream_backpressure_bounds_what_the_server_accepts() -> None:
    window = 16
    async with running(stream_window=window, max_repls=1) as (app, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        produced = 0

        async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
            nonlocal produced
            for i in range(100_000):
                produced += 1
                # Distinct proofs (identical ones would share one check): each is a job of its own.
                yield pb.StreamVerifyRequest(proof=proof(f"p{i}", f"  -- fake: sleep 30\n  -- {i}"))

        def held() -> int:
            return app.supervisor.queued + sum(h.busy for h in app.supervisor.state().headers)

        call = stub.StreamVerify(requests())
        # No proof ends (each sleeps 30 s): once the window is full the server reads nothing more.
        await eventually(lambda: held() >= window, what="the window full")
        in_server = held()
        call.cancel()
        print(f"\nbackpressure: client produced {produced}, server holds {in_server} (window {window})")
        assert in_server <= window
        assert produced < 5_000  # the window plus transport buffers, not 100,000
        await eventually(lambda: app.supervisor.queued == 0, what="the cancelled stream's proofs dropped")


async def test_client_cancel_mid_stream_never_runs_queued_proofs() -> None:
    async with running(max_repls=1, stream_window=50) as (app, ch):
        stub = pb_grpc.VerifierServiceStub(ch)

        async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
            for i in range(20):
                yield pb.StreamVerifyRequest(proof=proof(f"p{i}", f"  -- fake: sleep 1\n  -- {i}"))  # distinct
            await asyncio.sleep(60)  # keeps the client's side open until the call is cancelled

        call = stub.StreamVerify(requests())
        first = await call.read()
        assert isinstance(first, pb.StreamVerifyResponse)
        call.cancel()
        labels = {"grpc_service": SERVICE_NAME, "grpc_method": "StreamVerify", "grpc_type": "bidi_stream"}

        def over() -> bool:
            """The call is counted CANCELLED, nothing is queued and no REPL works: no proof can run now."""
            cancelled = labels | {"grpc_code": "CANCELLED"}
            return (
                app.metrics.registry.get_sample_value("grpc_server_handled_total", cancelled) == 1
                and app.supervisor.queued == 0
                and not any(h.busy for h in app.supervisor.state().headers)
            )

        await eventually(over, what="the cancelled call over")
        completed = app.supervisor.totals.completed
        assert completed <= 3, completed  # the first, the one running at cancel, none of the queued 17+


async def test_deadline_caps_the_proof_timeout() -> None:
    # A warm REPL: the 1.5 s are the proof's, not a REPL's start on a loaded machine as well.
    async with running(init_repls={"import A": 1}) as (app, ch):
        await eventually(lambda: app.supervisor.ready, what="the REPL warm")
        stub = pb_grpc.VerifierServiceStub(ch)
        start = time.monotonic()
        reply = await stub.Verify(pb.VerifyRequest(proofs=[proof("h", "  -- fake: hang")]), timeout=1.5)
        assert reply.results[0].verdict == pb.VERDICT_TIMEOUT
        assert time.monotonic() - start < 1.5


def _detail(err: grpc.aio.AioRpcError, message: Any) -> Any:
    """The rich error detail of type `message` carried by the status (grpcio-status)."""
    raw = dict(err.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    assert status.details[0].Unpack(message)
    return message


def _violations(err: grpc.aio.AioRpcError) -> list[str]:
    return [v.field for v in _detail(err, error_details_pb2.BadRequest()).field_violations]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.VerifyRequest(), "proofs"),
        (pb.VerifyRequest(proofs=[pb.Proof(id="", code="x")]), "proofs[0].id"),
        (pb.VerifyRequest(proofs=[pb.Proof(id="a", code="x"), pb.Proof(id="a", code="y")]), "proofs[1].id"),
        (pb.VerifyRequest(proofs=[pb.Proof(id="a", code="x" * 2000)]), "proofs[0].code"),
        (pb.VerifyRequest(proofs=[proof("a", "", timeout_seconds=0)]), "proofs[0].options.timeout_seconds"),
        (pb.VerifyRequest(proofs=[proof("a", "", timeout_seconds=99999)]), "proofs[0].options.timeout_seconds"),
        (
            pb.VerifyRequest(proofs=[proof("a", "")], options=pb.ProofOptions(infotree=99)),  # type: ignore[arg-type]
            "options.infotree",
        ),
    ],
)
async def test_bad_input_is_invalid_argument_and_disturbs_nothing(request_: pb.VerifyRequest, field: str) -> None:
    async with running(max_code_bytes=1000) as (app, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Verify(request_)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in _violations(info.value)
        assert app.supervisor.totals.completed == 0 and app.supervisor.queued == 0
        ok = await stub.Verify(pb.VerifyRequest(proofs=[proof("fine", "")]))
        assert ok.results[0].verdict == pb.VERDICT_VALID


async def test_queue_full_is_resource_exhausted_with_retry_info() -> None:
    async with running(max_queue=2) as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:  # three distinct proofs (identical ones share a check)
            await stub.Verify(pb.VerifyRequest(proofs=[proof(str(i), f"  -- {i}") for i in range(3)]))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _detail(info.value, error_details_pb2.RetryInfo()).retry_delay.seconds >= 1


async def test_a_full_queue_holds_a_stream_instead_of_refusing_its_items() -> None:
    async with running(max_queue=3, max_repls=1, stream_window=8) as (app, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        # Another caller fills the queue; the stream's items wait for room, none is refused.
        batch = asyncio.ensure_future(
            stub.Verify(pb.VerifyRequest(proofs=[proof(f"b{i}", f"  -- fake: sleep 0.1\n  -- {i}") for i in range(3)]))
        )
        await eventually(lambda: app.supervisor.queued >= 3)

        async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
            for i in range(12):
                yield pb.StreamVerifyRequest(proof=proof(f"s{i}", f"  -- fake: sleep 0.02\n  -- {i}"))

        got = {r.result.id: pb.Verdict.Name(r.result.verdict) async for r in stub.StreamVerify(requests())}
        assert got == {f"s{i}": "VERDICT_VALID" for i in range(12)}
        assert [r.verdict for r in (await batch).results] == [pb.VERDICT_VALID] * 3


async def test_auth_required_health_exempt() -> None:
    async with running(api_key="s3cret") as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        req = pb.VerifyRequest(proofs=[proof("a", "")])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Verify(req)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Verify(req, metadata=(("authorization", "Bearer wrong"),))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await stub.Verify(req, metadata=(("authorization", "Bearer s3cret"),))).results[0].verdict == 1
        assert (await stub.Verify(req, metadata=(("x-api-key", "s3cret"),))).results[0].verdict == 1
        health = health_pb2_grpc.HealthStub(ch)
        assert (await health.Check(health_pb2.HealthCheckRequest(service=LIVENESS))).status == SERVING


async def test_readiness_follows_prewarm_and_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "1")
    app = create_app(settings(init_repls={"import A": 2}, drain_seconds=1.0))
    await app.start()
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    health = health_pb2_grpc.HealthStub(ch)

    async def status(name: str) -> int:
        return (await health.Check(health_pb2.HealthCheckRequest(service=name))).status  # type: ignore[no-any-return]

    async def serving() -> bool:
        return bool(await status(SERVICE_NAME) == SERVING)

    try:
        assert await status("") == NOT_SERVING and await status(SERVICE_NAME) == NOT_SERVING
        assert await status(LIVENESS) == SERVING
        await eventually(serving, what="ready once the REPLs imported")
        assert await status("") == SERVING and await status(SERVICE_NAME) == SERVING
        info = await pb_grpc.VerifierServiceStub(ch).GetServerInfo(pb.GetServerInfoRequest())
        assert info.ready and info.headers[0].warm == 2 and info.counters.imports == 2
        # The drain lasts while a proof runs (up to LEAN_SERVER_DRAIN_SECONDS): health still answers.
        running_proof = pb_grpc.VerifierServiceStub(ch).Verify(
            pb.VerifyRequest(proofs=[proof("p", "  -- fake: sleep 0.8", header="import A")])
        )
        await eventually(lambda: any(h.busy for h in app.supervisor.state().headers), what="the proof running")
        stopping = asyncio.create_task(app.stop())
        await eventually(lambda: app.servicer.draining, what="the drain begun")
        assert not await serving() and await status(LIVENESS) == SERVING
        assert (await running_proof).results[0].verdict == pb.VERDICT_VALID
        await stopping
    finally:
        await ch.close()
    assert children() == []


def test_reflection_lists_and_describes_the_service() -> None:
    with threaded_app() as (app, _), grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = list(db.get_services())
        file = db.FindFileContainingSymbol(SERVICE_NAME)
    assert SERVICE_NAME in services and "grpc.health.v1.Health" in services
    assert any(s.name == "VerifierService" for s in file.service)
    methods = {m.name for s in file.service for m in s.method}
    assert {"Verify", "StreamVerify", "ExportAst", "GetServerInfo"} <= methods


@pytest.fixture
def server_process() -> Iterator[tuple[subprocess.Popen[str], int]]:
    env = {"LEAN_SERVER_MAX_REPLS": "2", "LEAN_SERVER_DRAIN_SECONDS": "10", "LEAN_SERVER_GRACE_SECONDS": "5"}
    with serve_process(env) as (proc, port):
        yield proc, port


async def test_sigterm_during_a_batch_answers_in_flight_and_exits_clean(
    server_process: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = server_process
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.VerifierServiceStub(ch)
        # Two distinct proofs (identical ones would share one check), each long enough to see both run.
        batch = [proof(f"p{i}", f"  -- fake: sleep 3\n  -- {i}") for i in range(2)]
        call = stub.Verify(pb.VerifyRequest(proofs=batch))

        async def both_run() -> bool:  # REPLs start slowly on a loaded machine
            info = await stub.GetServerInfo(pb.GetServerInfoRequest())
            return sum(h.busy for h in info.headers) == 2

        await eventually(both_run, what="both proofs running")
        repls = psutil.Process(proc.pid).children(recursive=True)
        assert repls
        proc.send_signal(signal.SIGTERM)
        reply = await call
        assert [r.verdict for r in reply.results] == [pb.VERDICT_VALID] * 2
    assert await asyncio.to_thread(proc.wait, 15) == 0
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in repls)


async def test_metrics_count_what_callers_got_and_read_the_pool() -> None:
    async with running(metrics_port=0, max_repl_mem="300M") as (app, ch):
        assert app.metrics_port
        stub = pb_grpc.VerifierServiceStub(ch)
        proofs = [proof("v1", ""), proof("v2", ""), proof("bad", "  -- fake: error no"), proof("s", "  -- fake: sorry")]
        await stub.Verify(pb.VerifyRequest(proofs=proofs))

        async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
            yield pb.StreamVerifyRequest(proof=proof("ok", ""))
            yield pb.StreamVerifyRequest(proof=pb.Proof(id="", code="theorem x := 1"))  # invalid: NOT_CHECKED

        got = [r.result.verdict async for r in stub.StreamVerify(requests())]
        assert sorted(got) == [pb.VERDICT_VALID, pb.VERDICT_NOT_CHECKED]
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Verify(pb.VerifyRequest())  # no proofs: INVALID_ARGUMENT
        await eventually(lambda: app.supervisor.ready, what="the start-up probe done")
        # A blocking client in another thread; the endpoint answers from the event loop.
        m = await asyncio.to_thread(scrape, app.metrics_port)
        assert m['kimina_proofs_total{verdict="valid"}'] == 3
        assert m['kimina_proofs_total{verdict="invalid"}'] == 1
        assert m['kimina_proofs_total{verdict="sorry"}'] == 1
        assert m['kimina_proofs_total{verdict="not_checked"}'] == 1
        assert m["kimina_stream_items_invalid_total"] == 1
        assert m["kimina_queue_capacity"] == 100_000

        def handled(code: str, method: str, kind: str) -> float:
            labels = f'grpc_code="{code}",grpc_method="{method}",grpc_service="{SERVICE_NAME}",grpc_type="{kind}"'
            return m["grpc_server_handled_total{" + labels + "}"]

        assert handled("OK", "Verify", "unary") == 1
        assert handled("INVALID_ARGUMENT", "Verify", "unary") == 1
        assert handled("OK", "StreamVerify", "bidi_stream") == 1
        # v1 and v2 are identical: one check answers both (v2 joins it), and "ok" is a cache hit.
        assert m["kimina_proof_check_seconds_count"] == 3
        assert m["kimina_proof_queue_seconds_count"] == 3
        assert (m["kimina_cache_misses_total"], m["kimina_cache_dedupe_joins_total"], m["kimina_cache_hits_total"]) == (
            3,
            1,
            1,
        )
        assert m["kimina_cache_bytes"] > 0 and m["kimina_cache_entries"] == 3 and m["kimina_cache_backend_up"] == 1
        assert m['kimina_repls{state="warm"}'] + m['kimina_repls{state="busy"}'] >= 1
        assert m["kimina_repl_imports_total"] >= 1
        assert m["kimina_queued_proofs"] == 0 and m["kimina_ready"] == 1
        # Rendering on the event loop's own thread reads the pool directly (no deadlock).
        assert b"kimina_ready 1.0" in generate_latest(app.metrics.registry)
    # Stopped with the server.
    with pytest.raises(OSError):
        scrape(app.metrics_port)
