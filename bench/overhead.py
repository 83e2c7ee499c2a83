"""The server's own cost: zero-cost proofs through `kimina-grpc serve` with the stand-in REPL.

Measures proofs/s through StreamVerify (one and several streams) and Verify batches, the server's CPU
seconds per proof (its own process, REPLs excluded) and the stand-in's (reported apart, so the
server's share is honest), and the latency the server adds at low load (end to end minus the time the
REPL spent, one proof at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import psutil

from kimina_grpc.testing import serve_process
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

PROOFS = 20_000
CODE = "theorem t : True := trivial"


@contextlib.contextmanager
def server(**env: str) -> Iterator[tuple[psutil.Process, int]]:
    settings = {
        "LEAN_SERVER_DRAIN_SECONDS": "0",
        "LEAN_SERVER_MAX_QUEUE": "1000000",
        "LEAN_SERVER_MAX_BATCH": "100000",
        # Every proof is checked: the overhead of the path to a REPL, not of a cache hit.
        "LEAN_SERVER_CACHE_ENABLED": "false",
        # The stand-in keeps no environments: recycling (500 by default) would add REPL starts and
        # hide the recycled REPLs' CPU from the measurement.
        "LEAN_SERVER_MAX_REPL_USES": "0",
    }
    with serve_process({**settings, **env}) as (proc, port):
        yield psutil.Process(proc.pid), port


def cpu(p: psutil.Process) -> tuple[float, float]:
    """(server's own CPU seconds, its children's: the REPLs)."""
    own = p.cpu_times()
    kids = 0.0
    for c in p.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            t = c.cpu_times()
            kids += t.user + t.system
    return own.user + own.system, kids


async def warm(stub: pb_grpc.VerifierServiceAsyncStub, repls: int) -> None:
    await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id=str(i), code=CODE) for i in range(repls * 4)]))


async def stream_run(stub: pb_grpc.VerifierServiceAsyncStub, n: int, streams: int, window: int) -> None:
    async def one(k: int) -> None:
        async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
            for i in range(n // streams):
                yield pb.StreamVerifyRequest(proof=pb.Proof(id=f"{k}-{i}", code=CODE))

        got = 0
        async for _ in stub.StreamVerify(requests()):
            got += 1
        assert got == n // streams

    await asyncio.gather(*(one(k) for k in range(streams)))


async def verify_run(stub: pb_grpc.VerifierServiceAsyncStub, n: int, batch: int) -> None:
    async def one(start: int) -> None:
        proofs = [pb.Proof(id=str(i), code=CODE) for i in range(start, min(n, start + batch))]
        reply = await stub.Verify(pb.VerifyRequest(proofs=proofs))
        assert len(reply.results) == len(proofs)

    await asyncio.gather(*(one(s) for s in range(0, n, batch)))


async def latency_run(stub: pb_grpc.VerifierServiceAsyncStub, n: int) -> list[float]:
    added = []
    opts = pb.ProofOptions(diagnostics=True)
    for i in range(n):
        start = time.perf_counter()
        reply = await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id=str(i), code=CODE)], options=opts))
        total = time.perf_counter() - start
        added.append(total - reply.results[0].time_seconds)
    return added


def measure(case: str, repls: int, run: Any) -> dict[str, Any]:
    with server(LEAN_SERVER_MAX_REPLS=str(repls), LEAN_SERVER_STREAM_WINDOW="512") as (proc, port):

        async def go() -> float:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = pb_grpc.VerifierServiceStub(ch)
                await warm(stub, repls)
                before = cpu(proc)
                start = time.perf_counter()
                await run(stub)
                wall = time.perf_counter() - start
                after = cpu(proc)
                measure.cpu = (after[0] - before[0], after[1] - before[1])  # type: ignore[attr-defined]
                return wall

        wall = asyncio.run(go())
    own, repl = measure.cpu  # type: ignore[attr-defined]
    return {
        "case": case,
        "repls": repls,
        "proofs": PROOFS,
        "seconds": round(wall, 3),
        "proofs_per_s": round(PROOFS / wall),
        "server_cpu_us_per_proof": round(1e6 * own / PROOFS, 1),
        "stand_in_cpu_us_per_proof": round(1e6 * repl / PROOFS, 1),
    }


def main() -> dict[str, Any]:
    rows = [
        measure("StreamVerify, 1 stream", 1, lambda s: stream_run(s, PROOFS, 1, 512)),
        measure("StreamVerify, 4 streams", 1, lambda s: stream_run(s, PROOFS, 4, 512)),
        measure("Verify, batches of 500", 1, lambda s: verify_run(s, PROOFS, 500)),
    ]
    with server(LEAN_SERVER_MAX_REPLS="1") as (_, port):

        async def lat() -> list[float]:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = pb_grpc.VerifierServiceStub(ch)
                await warm(stub, 1)
                return await latency_run(stub, 500)

        added = sorted(asyncio.run(lat()))
    latency = {
        "p50_ms": round(1e3 * statistics.median(added), 3),
        "p99_ms": round(1e3 * added[int(0.99 * len(added))], 3),
    }
    print(f"overhead: {PROOFS} zero-cost proofs, stand-in REPL, {os.cpu_count()} cores")
    print(f"  {'case':<26}{'proofs/s':>10}{'server CPU us/proof':>21}{'stand-in CPU us/proof':>23}")
    for r in rows:
        print(
            f"  {r['case']:<26}{r['proofs_per_s']:>10}{r['server_cpu_us_per_proof']:>21}"
            f"{r['stand_in_cpu_us_per_proof']:>23}"
        )
    p50, p99 = latency["p50_ms"], latency["p99_ms"]
    print(f"  latency added by the server per proof (unary, low load): p50 {p50} ms, p99 {p99} ms")
    return {"rows": rows, "latency_added": latency}
