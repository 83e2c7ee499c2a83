"""How long a large reply stalls the event loop (issue 14, item 4): a 50 MB info tree, as a REPL
writes it, parsed on the loop (how every reply was parsed before) and through `repl.decode` (a helper
process for replies over 128 KiB). A ticker on the loop sleeps 1 ms at a time; its longest gap is the
worst stall every other caller, timer and health check would have seen.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kimina_grpc.repl import decode, protocol
from kimina_grpc.testing.fake_repl import _big_tree

MB = 40  # of the stand-in's flat tree: about 50 MB of pretty-printed JSON


async def _worst_stall(work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    start = time.perf_counter()
    await work()
    took = time.perf_counter() - start
    done = True
    await task
    return worst, took


async def _run() -> dict[str, Any]:
    raw = json.dumps({"env": 1, "infotree": _big_tree(MB, 3)}, indent=1).encode()

    async def on_loop() -> None:
        protocol.parse_reply(raw, 5)

    async def through_decode() -> None:
        await decode.decode(raw, 5)

    await decode.decode(raw, 5)  # the first call also starts the helper process
    rows = {}
    for name, work in (("on the loop (before)", on_loop), ("repl.decode (after)", through_decode)):
        stalls = [await _worst_stall(work) for _ in range(3)]
        rows[name] = {"worst_stall_ms": max(s for s, _ in stalls) * 1000, "seconds": min(t for _, t in stalls)}
    await decode.shutdown()
    return {"reply_mb": round(len(raw) / 1e6, 1), "rows": rows}


def main() -> dict[str, Any]:
    data = asyncio.run(_run())
    print(f"\nEvent-loop stall while a {data['reply_mb']} MB reply is parsed and shifted (worst of 3)")
    print("| where | worst stall ms | parse s |")
    print("| --- | --- | --- |")
    for name, row in data["rows"].items():
        print(f"| {name} | {row['worst_stall_ms']:.1f} | {row['seconds']:.2f} |")
    return data
