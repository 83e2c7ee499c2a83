"""Both Python clients against the real server with the stand-in REPL."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import grpc
import pytest

from kimina_grpc.client import (
    AsyncKiminaClient,
    InvalidArgument,
    KiminaClient,
    KiminaError,
    Proof,
    Unauthenticated,
    Verdict,
)
from kimina_grpc.service.server import create_app

from .helpers import eventually, eventually_sync
from .helpers.client import count_calls
from .helpers.server import running, settings, threaded_app

VALID = "import A\ntheorem t : True := by\n  trivial"
INVALID = "import A\ntheorem t : True := by\n  -- fake: error no\n  trivial"
SORRY = "import A\ntheorem t : True := by\n  -- fake: sorry"


async def test_async_client_methods_and_result_fields() -> None:
    async with running() as (app, _), AsyncKiminaClient(f"127.0.0.1:{app.port}", batch_size=2) as client:
        assert await client.health("liveness")  # at once; readiness once the start-up probe is done
        await eventually(client.health, what="ready")
        results = await client.verify([VALID, Proof("mine", INVALID), SORRY], diagnostics=True)
        assert [r.id for r in results] == ["0", "mine", "2"]
        assert [r.verdict.name for r in results] == ["VALID", "INVALID", "SORRY"]
        assert results[0].ok and not results[1].ok
        msg = results[1].messages[0]
        assert (msg.severity, msg.line, msg.column, msg.end_line, msg.text) == ("error", 3, 0, 3, "no")
        assert results[2].sorries[0].line == 3 and results[2].sorries[0].goal
        assert results[0].diagnostics is not None and results[0].diagnostics.repl_id
        assert results[0].error == "" and results[0].infotree is None and results[0].time >= 0
        single = await client.verify(VALID, diagnostics=True)
        assert len(single) == 1 and single[0].id == "0"
        assert single[0].diagnostics is not None and single[0].diagnostics.from_cache  # checked just before
        again = await client.verify(VALID, diagnostics=True, cache=False)
        assert again[0].diagnostics is not None and not again[0].diagnostics.from_cache
        streamed = [r async for r in client.verify_stream(f"{VALID}\n-- {i}" for i in range(30))]
        assert sorted(r.id for r in streamed) == sorted(str(i) for i in range(30))
        info = await client.server_info()
        assert info.counters.completed >= 34 and info.cache.hits == 1
        with pytest.raises(KiminaError) as err:
            await client.export_ast(["Mathlib.Logic.Basic"])
        assert err.value.code is grpc.StatusCode.FAILED_PRECONDITION  # no ast_export project here


def test_sync_client_methods() -> None:
    with threaded_app() as (app, _), KiminaClient(f"127.0.0.1:{app.port}") as client:
        eventually_sync(client.health, what="ready")
        assert [r.verdict for r in client.verify([VALID, INVALID])] == [Verdict.VALID, Verdict.INVALID]
        got = list(client.verify_stream([Proof(f"s{i}", VALID) for i in range(10)], window=3))
        assert sorted(r.id for r in got) == [f"s{i}" for i in range(10)]
        assert client.server_info().ready


async def test_invalid_argument_and_unauthenticated_raise_without_retry() -> None:
    async with running(api_key="k") as (app, _):
        async with AsyncKiminaClient(f"127.0.0.1:{app.port}", api_key="k") as client:
            calls = count_calls(client, "Verify")
            with pytest.raises(InvalidArgument) as err:
                await client.verify([Proof("", VALID)])
            assert calls["Verify"] == 1
            assert any(d.startswith("proofs[0].id") for d in err.value.details)
        async with AsyncKiminaClient(f"127.0.0.1:{app.port}", api_key="wrong") as client:
            calls = count_calls(client, "Verify")
            with pytest.raises(Unauthenticated):
                await client.verify(VALID)
            assert calls["Verify"] == 1


async def test_resource_exhausted_is_retried_then_raised() -> None:
    async with running(max_queue=2) as (app, _):
        async with AsyncKiminaClient(f"127.0.0.1:{app.port}", max_attempts=2) as client:
            calls = count_calls(client, "Verify")
            with pytest.raises(KiminaError) as err:
                await client.verify([f"{VALID}\n-- {i}" for i in range(3)])  # distinct: identical ones share a check
            assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert calls["Verify"] == 2


async def test_unavailable_is_retried_until_the_server_comes() -> None:
    with socket.socket() as sock:  # a port nothing listens on: UNAVAILABLE until the server comes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with AsyncKiminaClient(f"127.0.0.1:{port}", max_attempts=8) as client:
        calls = count_calls(client, "Verify")
        task = asyncio.create_task(client.verify(VALID))
        await eventually(lambda: calls["Verify"] >= 2, what="the first attempt refused and retried")
        app = create_app(settings(port=port))
        await app.start()
        try:
            results = await task
            assert results[0].verdict is Verdict.VALID and calls["Verify"] >= 2
        finally:
            await app.stop()


async def test_stream_reconnects_after_a_server_restart_each_id_once() -> None:
    app = create_app(settings(max_repls=2))
    await app.start()
    port = app.port
    proofs = [
        Proof(f"p{i}", f"import A\ntheorem t : True := by\n  -- fake: sleep 0.05\n  trivial\n-- {i}") for i in range(60)
    ]
    seen: Counter[str] = Counter()
    try:
        async with AsyncKiminaClient(f"127.0.0.1:{port}", max_attempts=10) as client:
            restarted = False
            async for result in client.verify_stream(proofs, window=8):
                seen[result.id] += 1
                if sum(seen.values()) == 15 and not restarted:
                    restarted = True
                    await app.stop()
                    app = create_app(settings(port=port, max_repls=2))
                    await app.start()
    finally:
        await app.stop()
    assert restarted
    assert set(seen) == {p.id for p in proofs} and set(seen.values()) == {1}


def test_client_imports_without_the_server_dependencies() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        server = {'psutil', 'pydantic', 'pydantic_settings', 'structlog', 'grpc_reflection'}\n"
        "        if name.split('.')[0] in server:\n"
        "            raise ImportError(f'{name} is a server dependency')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from kimina_grpc.client import KiminaClient, AsyncKiminaClient, Proof, Result, Verdict\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


async def test_verify_stream_refuses_a_window_below_one_and_a_repeated_id_in_flight() -> None:
    async with running() as (app, _), AsyncKiminaClient(f"127.0.0.1:{app.port}") as client:
        for window in (0, -1):
            with pytest.raises(ValueError, match="window must be at least 1"):
                [r async for r in client.verify_stream([VALID], window=window)]
        slow = "-- fake: sleep 0.5"
        with pytest.raises(ValueError, match="proof id 'a' is already in flight"):
            [r async for r in client.verify_stream([Proof("a", slow), Proof("b", VALID), Proof("a", VALID)])]
        # Once its result is out, an id may come again.
        again = [r.id async for r in client.verify_stream([Proof("a", VALID), Proof("a", SORRY)], window=1)]
        assert again == ["a", "a"]
        with pytest.raises(ValueError, match="cannot tell which column"):  # the source's own error
            [r async for r in client.verify_stream([{"text": "x"}])]


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_a_tls_handshake_failure_is_not_retried_an_outage_is() -> None:
    from kimina_grpc.client._errors import is_retryable

    down = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1: Connection refused"
    assert is_retryable(_Failed(grpc.StatusCode.UNAVAILABLE, down))
    handshake = (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: Tls handshake failed "
        "(TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED"
    )
    assert not is_retryable(_Failed(grpc.StatusCode.UNAVAILABLE, handshake))
