"""Warm-up (start to readiness with LEAN_SERVER_INIT_REPLS for 8 REPLs) and the server's memory with
10,000 proofs queued."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.overhead import server
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
# A realistic proof: the longest Goedel file of the fixtures (about 2 KB).
SAMPLE_DIR = ROOT.parent / "shared" / "fixtures" / "kimina-match" / "input"


def warmup(concurrent: int) -> float:
    started = time.monotonic()
    env = {
        "LEAN_SERVER_MAX_REPLS": "8",
        "LEAN_SERVER_INIT_REPLS": json.dumps({"import Mathlib": 8}),
        "LEAN_SERVER_MAX_CONCURRENT_IMPORTS": str(concurrent),
        "KIMINA_FAKE_IMPORT_SECONDS": "1",
    }
    with server(**env) as (_, port):

        async def ready() -> float:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                health = health_pb2_grpc.HealthStub(ch)
                request = health_pb2.HealthCheckRequest(service="kimina_grpc.v1.VerifierService")
                while (await health.Check(request)).status != health_pb2.HealthCheckResponse.SERVING:
                    await asyncio.sleep(0.01)
                return time.monotonic() - started

        return asyncio.run(ready())


def queued_memory(n: int) -> dict[str, float]:
    samples = sorted(SAMPLE_DIR.glob("*.lean"), key=lambda p: p.stat().st_size)
    code = samples[-1].read_text() if samples else "theorem t : True := trivial\n" * 40
    with server(LEAN_SERVER_MAX_REPLS="1") as (proc, port):
        idle = proc.memory_info().rss

        async def fill() -> float:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = pb_grpc.VerifierServiceStub(ch)
                hang = pb.Proof(id="hang", code="theorem h : True := by\n  -- fake: hang\n  trivial")
                proofs = [hang, *(pb.Proof(id=str(i), code=code) for i in range(n - 1))]
                call = stub.Verify(pb.VerifyRequest(proofs=proofs, options=pb.ProofOptions(timeout_seconds=600)))
                while (await stub.GetServerInfo(pb.GetServerInfoRequest())).queued < n - 1:
                    await asyncio.sleep(0.05)
                rss = proc.memory_info().rss
                call.cancel()
                return float(rss)

        full = asyncio.run(fill())
    return {"idle_mib": idle / 2**20, "queued_mib": full / 2**20, "code_bytes": len(code.encode())}


def main() -> dict[str, Any]:
    warm = {f"{c} concurrent imports": round(warmup(c), 2) for c in (2, 8)}
    mem = queued_memory(10_000)
    print("warm-up: start to readiness, 8 REPLs pre-warmed, import 1 s")
    for case, seconds in warm.items():
        print(f"  {case:<24}{seconds:>8.2f} s")
    print(
        f"memory: server RSS idle {mem['idle_mib']:.0f} MiB, with 10,000 proofs of {mem['code_bytes']} B queued "
        f"{mem['queued_mib']:.0f} MiB"
    )
    return {"warmup_seconds": warm, "memory": mem}
