"""The shared cache with a real redis-server (started on a free loopback port, no persistence)."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from kimina_grpc.client import KiminaClient, Proof, Verdict
from kimina_grpc.testing import redis_server, serve_process, start_redis
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually, eventually_sync
from .helpers.cache import checks
from .helpers.server import running

DIRECTIVES = {"": Verdict.VALID, "  -- fake: error nope": Verdict.INVALID, "  -- fake: sorry": Verdict.SORRY}


def proofs(n: int, tag: str) -> list[tuple[Proof, Verdict]]:
    out = []
    kinds = list(DIRECTIVES.items())
    for i in range(n):
        directive, verdict = kinds[i % 3]
        code = f"import A\n\ntheorem t{i} : True := by\n  -- fake: sleep 0.01\n{directive}\n  trivial\n-- {tag}"
        out.append((Proof(f"{tag}{i}", code), verdict))
    return out


@pytest.fixture
def redis_srv() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    with redis_server() as running_redis:
        yield running_redis


@pytest.fixture
def redis_port(redis_srv: tuple[subprocess.Popen[bytes], int]) -> int:
    return redis_srv[1]


def wait_for_keys(port: int, count: int) -> None:
    """Writes to Redis are in the background: wait until they landed."""
    client = redis.Redis(port=port)
    eventually_sync(lambda: client.dbsize() >= count, what=f"{count} keys in Redis")
    assert client.dbsize() == count


def test_two_serve_processes_share_hits(redis_port: int, tmp_path: Path) -> None:
    work = proofs(60, "p")
    logs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    envs = [
        {
            "LEAN_SERVER_CACHE_URL": f"redis://127.0.0.1:{redis_port}/0",
            "LEAN_SERVER_CACHE_ALLOW_UNBOXED": "true",  # the tests' REPLs run unboxed
            "KIMINA_FAKE_LOG": str(log),
            "LEAN_SERVER_MAX_REPLS": "2",
            # Not the 0.1 s default: a write that takes longer on a loaded machine is dropped (the
            # policy), and B would check that proof itself. Sharing is what this test is about.
            "LEAN_SERVER_CACHE_TIMEOUT": "10",
        }
        for log in logs
    ]
    with serve_process(envs[0]) as (_, port_a), serve_process(envs[1]) as (_, port_b):
        with KiminaClient(f"127.0.0.1:{port_a}") as a:
            first = a.verify([p for p, _ in work], diagnostics=True)
            assert [r.verdict for r in first] == [v for _, v in work]
            assert a.server_info().cache.backend == "memory+redis"
        wait_for_keys(redis_port, 60)
        with KiminaClient(f"127.0.0.1:{port_b}") as b:
            second = b.verify([Proof("b" + p.id, p.code) for p, _ in work], diagnostics=True)
            info = b.server_info()
        assert [r.id for r in second] == ["b" + p.id for p, _ in work]
        assert [r.verdict for r in second] == [v for _, v in work]
        assert all(r.diagnostics is not None and r.diagnostics.from_cache for r in second)
        assert [(r.messages, r.sorries, r.time) for r in second] == [(r.messages, r.sorries, r.time) for r in first]
        assert len(checks(logs[0])) == 60 and checks(logs[1]) == []  # B ran no Lean at all
        assert (info.cache.hits, info.cache.misses, info.cache.backend_errors) == (60, 0, 0)


async def stream(stub: pb_grpc.VerifierServiceAsyncStub, work: list[tuple[Proof, Verdict]]) -> dict[str, int]:
    """Send `work` on one stream; returns id -> verdict, each id answered once."""

    async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
        for p, _ in work:
            yield pb.StreamVerifyRequest(proof=pb.Proof(id=p.id, code=p.code))

    got: dict[str, int] = {}
    async for r in stub.StreamVerify(requests()):
        assert r.result.id not in got
        got[r.result.id] = r.result.verdict
    return got


async def test_redis_killed_mid_run_fails_no_proof_and_comes_back(
    redis_srv: tuple[subprocess.Popen[bytes], int],
) -> None:
    killed, redis_port = redis_srv
    url = f"redis://127.0.0.1:{redis_port}/0"
    # A killed Redis refuses connections at once: no timeout is involved, and a long one keeps a
    # request that is merely slow on a loaded machine from counting as an outage (the first assertion
    # on `up`, the 30 writes after it came back).
    async with running(
        cache_url=url, cache_allow_unboxed=True, cache_timeout=10, cache_retry_seconds=0.3, stream_window=8
    ) as (app, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        work = proofs(150, "k")
        task = asyncio.create_task(stream(stub, work))
        await eventually(lambda: app.cache.misses >= 40)
        assert app.cache.remote is not None and app.cache.remote.up
        killed.kill()
        killed.wait()
        got = await task
        assert got == {p.id: v.value for p, v in work}  # every proof answered, rightly
        info = await stub.GetServerInfo(pb.GetServerInfoRequest())
        assert info.cache.backend_errors > 0 and not info.cache.remote_up
        assert info.cache.misses == 150  # nothing was lost: each proof checked once, none twice

        # Redis comes back (empty, on the same port): the server uses it again after the retry interval.
        back = start_redis(redis_port)
        try:
            # Kept: the server tries Redis again only after its retry interval (0.3 s); no state shows
            # that interval over before the next proof asks.
            await asyncio.sleep(0.4)
            more = proofs(30, "m")
            assert await stream(stub, more) == {p.id: v.value for p, v in more}
            await asyncio.to_thread(wait_for_keys, redis_port, 30)
            info = await stub.GetServerInfo(pb.GetServerInfoRequest())
            assert info.cache.remote_up
        finally:
            back.kill()
            back.wait()


async def test_a_frozen_redis_fails_no_proof_and_comes_back(redis_srv: tuple[subprocess.Popen[bytes], int]) -> None:
    """SIGSTOP: Redis still accepts connections but never answers, the worst case for a client."""
    frozen, redis_port = redis_srv
    url = f"redis://127.0.0.1:{redis_port}/0"
    async with running(cache_url=url, cache_allow_unboxed=True, cache_timeout=0.1, cache_retry_seconds=0.3) as (
        app,
        ch,
    ):
        stub = pb_grpc.VerifierServiceStub(ch)
        frozen.send_signal(signal.SIGSTOP)
        try:
            work = proofs(20, "f")
            reply = await stub.Verify(
                pb.VerifyRequest(proofs=[pb.Proof(id=p.id, code=p.code) for p, _ in work]), timeout=30
            )
            assert [r.verdict for r in reply.results] == [v.value for _, v in work]
            got = await stream(stub, proofs(20, "g"))
            assert len(got) == 20
            assert app.cache.remote is not None and app.cache.remote.errors > 0 and not app.cache.remote.up
        finally:
            frozen.send_signal(signal.SIGCONT)
        # Redis answers again: a proof after the retry interval (0.3 s) is looked up and written there.
        # One request past the 0.1 s timeout (a loaded machine) puts that off by another interval, so
        # new proofs are sent until Redis answered one.
        tries, keys = itertools.count(), redis.Redis(port=redis_port)

        async def answered_again() -> bool:
            [(again, verdict)] = proofs(1, f"x{next(tries)}-")
            reply = await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id=again.id, code=again.code)]))
            assert reply.results[0].verdict == verdict.value
            written = await asyncio.to_thread(keys.dbsize)
            return app.cache.remote is not None and app.cache.remote.up and written >= 1

        await eventually(answered_again, interval=0.1, what="Redis answered and written to again")
        assert app.cache.remote.errors > 0
        keys.close()
        frozen.kill()  # before `running` checks that the test left no child process
        frozen.wait()
