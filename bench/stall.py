"""How long a large reply stalls the event loop (issue 14, item 4): a 50 MB info tree, as a REPL
writes it, parsed on the loop (how every reply was parsed before) and through `repl.decode` (a helper
process for replies over 128 KiB). A ticker on the loop sleeps 1 ms at a time; its longest gap is the
worst stall every other caller, timer and health check would have seen.

And a reply of 300,000 small messages (`logInfo` in a loop; issue 24, item 3), from the REPL's bytes
to the proof's result message: before, parsed in the helper but unpickled whole and converted on the
loop; after, `repl.decode` (bounded to LEAN_SERVER_MAX_REPLY_MESSAGES, unpickled in slices) and
`service.results.build` (converted in slices), with the default bound and with no bound at all.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kimina_grpc.repl import bounds, decode, protocol
from kimina_grpc.service import convert, results
from kimina_grpc.supervisor.jobs import Outcome
from kimina_grpc.testing.fake_messages import big_tree, msg
from kimina_grpc.verdict import Verdict

MB = 40  # of the stand-in's flat tree: about 50 MB of pretty-printed JSON
MESSAGES = 300_000


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
    raw = json.dumps({"env": 1, "infotree": big_tree(MB, 3)}, indent=1).encode()

    async def on_loop() -> None:
        protocol.parse_reply(raw, 5)

    async def through_decode() -> None:
        await decode.decode(raw, 5)

    await decode.decode(raw, 5)  # the first call also starts the helper process
    rows = {}
    for name, work in (("on the loop (before)", on_loop), ("repl.decode (after)", through_decode)):
        stalls = [await _worst_stall(work) for _ in range(3)]
        rows[name] = {"worst_stall_ms": max(s for s, _ in stalls) * 1000, "seconds": min(t for _, t in stalls)}
    many = await _many_messages()
    await decode.shutdown()
    return {"reply_mb": round(len(raw) / 1e6, 1), "rows": rows, "messages": many}


async def _many_messages() -> dict[str, Any]:
    raw = json.dumps({"env": 1, "messages": [msg("info", 3, 2, "hello") for _ in range(MESSAGES)]}, indent=1).encode()
    payload = pickle.dumps(protocol.parse_reply(raw, 5), protocol=pickle.HIGHEST_PROTOCOL)  # the helper's, before

    async def before() -> None:
        reply = pickle.loads(payload)
        convert.to_result("p", Outcome(Verdict.VALID, reply), False)

    def after(max_items: int) -> Callable[[], Awaitable[Any]]:
        async def work() -> None:
            reply = await decode.decode(raw, 5, max_items=max_items)
            await results.build("p", Outcome(Verdict.VALID, reply), False, 64 << 20)

        return work

    async def idle() -> None:
        await asyncio.sleep(3)

    rows = {}
    shapes = (
        ("nothing (the machine's own noise)", idle),
        ("unpickled whole, converted on the loop (before)", before),
        (f"decode + results.build, at most {bounds.MAX_ITEMS:,} kept (after)", after(bounds.MAX_ITEMS)),
        ("decode + results.build, all kept (slices alone)", after(MESSAGES + 1)),
    )
    for name, work in shapes:
        stalls = [await _worst_stall(work) for _ in range(3)]
        rows[name] = {"worst_stall_ms": max(s for s, _ in stalls) * 1000, "seconds": min(t for _, t in stalls)}
    return {"messages": MESSAGES, "reply_mb": round(len(raw) / 1e6, 1), "rows": rows}


def main() -> dict[str, Any]:
    data = asyncio.run(_run())
    print(f"\nEvent-loop stall while a {data['reply_mb']} MB reply is parsed and shifted (worst of 3)")
    print("| where | worst stall ms | parse s |")
    print("| --- | --- | --- |")
    for name, row in data["rows"].items():
        print(f"| {name} | {row['worst_stall_ms']:.1f} | {row['seconds']:.2f} |")
    many = data["messages"]
    print(f"\nEvent-loop stall for a reply of {many['messages']:,} messages ({many['reply_mb']} MB), reply to result")
    print("| where | worst stall ms | total s |")
    print("| --- | --- | --- |")
    for name, row in many["rows"].items():
        print(f"| {name} | {row['worst_stall_ms']:.1f} | {row['seconds']:.2f} |")
    return data
