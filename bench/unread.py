"""A client that writes proofs and reads none of the results (issue 17, item 3): how many proofs the
server checks for it and what it costs the server's memory, through `kimina-grpc serve` with the
stand-in REPL. Each proof's result carries a 256 KiB message, so HTTP/2 windows hold next to none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import psutil

from kimina_grpc.testing import serve_process
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

PROOFS = 400
WINDOW = 64
IDLE_SECONDS = 5.0
BIG = "theorem t : True := by\n  -- fake: info " + "x" * (256 << 10) + "\n  trivial"


async def _run(port: int, server: psutil.Process) -> dict[str, Any]:
    # The client's receive window stays small (no BDP growth): what a client's own transport takes in
    # is the client's memory; the server's is measured here.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.http2.bdp_probe", 0)]) as ch:
        stub = pb_grpc.VerifierServiceStub(ch)
        await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id="warm", code="theorem w : True := trivial")]))
        before = server.memory_info().rss
        written = 0

        async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
            nonlocal written
            for i in range(PROOFS):
                written += 1
                yield pb.StreamVerifyRequest(proof=pb.Proof(id=f"p{i}", code=f"{BIG}\n-- {i}"))

        call = stub.StreamVerify(requests())
        await asyncio.sleep(IDLE_SECONDS)
        info = await stub.GetServerInfo(pb.GetServerInfoRequest())
        idle_rss = server.memory_info().rss
        started = time.perf_counter()
        answered = len([r async for r in call])
        return {
            "proofs": PROOFS,
            "window": WINDOW,
            "written_while_unread": written,
            "checked_while_unread": info.counters.completed - 1,
            "server_rss_before_mib": round(before / 2**20, 1),
            "server_rss_unread_mib": round(idle_rss / 2**20, 1),
            "answered_after_reading": answered,
            "seconds_to_drain_after_reading": round(time.perf_counter() - started, 2),
        }


def main() -> dict[str, Any]:
    env = {"LEAN_SERVER_STREAM_WINDOW": str(WINDOW), "LEAN_SERVER_MAX_REPLS": "2", "LEAN_SERVER_DRAIN_SECONDS": "0"}
    with serve_process(env) as (proc, port):
        data = asyncio.run(_run(port, psutil.Process(proc.pid)))
    print(f"\nunread stream ({PROOFS} proofs with 256 KiB results, window {WINDOW}, {IDLE_SECONDS:g} s unread)")
    for key, value in data.items():
        print(f"  {key:32} {value}")
    return data
