"""The box's overhead: REPL start (process start to the reply to its header command) and per-proof
latency (one warm REPL, a trivial proof at a time), without and with bubblewrap. Both run with the
same limits and environment allow-list; only the box differs. The stand-in REPL (a Python process)
stands for Lean: its own start (~tens of ms) is the baseline the box adds to, where Lean's import of
Mathlib takes 10-20 s."""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import statistics
import time
from typing import Any

from kimina_grpc.repl import Repl, ReplSpec
from kimina_grpc.repl.sandbox import OFF, Box, probe
from kimina_grpc.testing import fake_repl_command

STARTS = 30
PROOFS = 500


def _cmd(cmd: str, env: int | None = None) -> bytes:
    obj: dict[str, Any] = {"cmd": cmd} if env is None else {"cmd": cmd, "env": env}
    return json.dumps(obj).encode() + b"\n\n"


async def _measure(box: Box) -> dict[str, float]:
    spec = ReplSpec(argv=tuple(shlex.split(fake_repl_command())), box=box, max_memory_bytes=4 << 30)
    starts = []
    for i in range(STARTS):
        t = time.perf_counter()
        repl = await Repl.start(spec, f"s{i}")
        await repl.run(_cmd(""), measure=False)
        starts.append(time.perf_counter() - t)
        await repl.kill()
    repl = await Repl.start(spec, "p")
    await repl.run(_cmd(""), measure=False)
    lat = []
    for i in range(PROOFS):
        t = time.perf_counter()
        await repl.run(_cmd(f"theorem t{i} : True := trivial", 0), measure=True)
        lat.append(time.perf_counter() - t)
    await repl.kill()
    lat.sort()
    return {
        "start_median_ms": 1000 * statistics.median(starts),
        "start_max_ms": 1000 * max(starts),
        "proof_p50_ms": 1000 * lat[len(lat) // 2],
        "proof_p99_ms": 1000 * lat[int(len(lat) * 0.99)],
    }


def main() -> dict[str, Any]:
    cases: dict[str, Box] = {"off": OFF}
    bwrap = shutil.which("bwrap")
    box = Box(bwrap=bwrap)
    reason = probe(box)
    if reason is None:
        cases["bwrap"] = box
    else:
        print(f"bwrap cannot run here ({reason}): measuring without the box only")
    results = {name: asyncio.run(_measure(b)) for name, b in cases.items()}
    print(f"\nREPL start ({STARTS} starts) and per-proof latency ({PROOFS} proofs), stand-in REPL")
    print(f"{'box':<8}{'start median ms':>17}{'start max ms':>14}{'proof p50 ms':>14}{'proof p99 ms':>14}")
    for name, r in results.items():
        print(
            f"{name:<8}{r['start_median_ms']:>17.1f}{r['start_max_ms']:>14.1f}"
            f"{r['proof_p50_ms']:>14.3f}{r['proof_p99_ms']:>14.3f}"
        )
    return results


if __name__ == "__main__":
    main()
