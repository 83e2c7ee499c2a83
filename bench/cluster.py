"""One call over 1, 2 and 4 local replicas (`kimina-grpc serve` processes, stand-in REPL).

- **spread**: one verify_stream of PROOFS proofs whose costs are Kimina's recorded times x SCALE,
  slept in the stand-in (wall time, so 16 REPLs fit on 2 cores; x SCALE keeps the
  server's own work per proof small next to the proof); makespan / ideal, where ideal =
  max(sum(costs) / all REPLs, max(cost)), and the FIFO bound (greedy dispatch in arrival order over
  all REPLs, no overhead); per-replica answers.
- **affinity**: 3 replicas of AFFINITY_REPLS REPLs, 3 headers interleaved, every import IMPORT s:
  imports counted by the replicas, with and without header affinity.
- **failover**: 3 replicas, one SIGKILLed when half the answers are in: time lost against the same
  run undisturbed (its REPLs' share of the second half must move; the floor is that share / the rest).

BENCH_CLUSTER_PROOFS (default 2000) makes it shorter on a busy machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

from bench.scheduling import recorded_costs
from kimina_grpc.client import AsyncKiminaClient, ClusterOptions, Proof, Verdict
from kimina_grpc.testing import serve_process

REPLS = 4
SCALE = 0.05
IMPORT = 1.0
AFFINITY_REPLS = 2
SIZES = (1, 2, 4)
PROOFS = int(os.environ.get("BENCH_CLUSTER_PROOFS", "2000"))

Servers = list[tuple[subprocess.Popen[str], int]]


@contextlib.contextmanager
def replicas(n: int, env: dict[str, str] | None = None) -> Iterator[Servers]:
    with contextlib.ExitStack() as stack:
        base = {"LEAN_SERVER_MAX_REPLS": str(REPLS), "LEAN_SERVER_MAX_CONCURRENT_IMPORTS": str(REPLS)}
        yield [stack.enter_context(serve_process({**base, **(env or {})})) for _ in range(n)]


def target(servers: Servers) -> str:
    ports = [f"127.0.0.1:{port}" for _, port in servers]
    return ports[0] if len(ports) == 1 else ",".join(ports)


def batch(costs: list[float], headers: list[str]) -> list[Proof]:
    nonce = uuid.uuid4().hex[:8]  # nothing from the replicas' caches
    return [
        Proof(
            f"p{i}",
            f"{headers[i % len(headers)]}theorem t{i}_{nonce} : True := by\n  -- fake: sleep {c:.4f}\n  trivial",
        )
        for i, c in enumerate(costs)
    ]


def fifo_bound(costs: list[float], repls: int) -> float:
    free = [0.0] * repls
    for c in costs:
        heapq.heappush(free, heapq.heappop(free) + c)
    return max(free)


async def imports(servers: Servers) -> int:
    total = 0
    for _, port in servers:
        async with AsyncKiminaClient(f"127.0.0.1:{port}") as one:
            total += int((await one.server_info()).counters.imports)
    return total


async def run(
    servers: Servers, proofs: list[Proof], affinity: bool = True, kill_at: int | None = None
) -> dict[str, Any]:
    start = time.monotonic()
    n = 0
    async with AsyncKiminaClient(target(servers), cluster=ClusterOptions(affinity=affinity)) as client:
        async for r in client.verify_stream(proofs):
            assert r.verdict is Verdict.VALID, r
            n += 1
            if n == kill_at:
                servers[0][0].kill()
        makespan = time.monotonic() - start
        stats = client.backends()
    assert n == len(proofs)
    return {
        "makespan_s": round(makespan, 3),
        "answered": [s.answered for s in stats],
        "resent": sum(s.resent for s in stats),
        "spilled": sum(s.spilled for s in stats),
    }


async def run_counting_imports(servers: Servers, proofs: list[Proof], affinity: bool) -> dict[str, Any]:
    r = await run(servers, proofs, affinity=affinity)
    return r | {"imports": await imports(servers)}  # on the same loop: gRPC's poller is bound to one


def spread(costs: list[float]) -> list[dict[str, Any]]:
    print(f"  {'replicas':<10}{'REPLs':>6}{'ideal s':>9}{'makespan s':>12}{'÷ ideal':>9}{'FIFO bound':>12}  answered")
    rows = []
    for n in SIZES:
        with replicas(n) as servers:
            r = asyncio.run(run(servers, batch(costs, [""])))
        ideal = max(sum(costs) / (n * REPLS), *costs)
        bound = fifo_bound(costs, n * REPLS)
        r |= {"replicas": n, "ideal_s": round(ideal, 3), "fifo_bound_s": round(bound, 3)}
        r["of_ideal"] = round(r["makespan_s"] / ideal, 3)
        print(
            f"  {n:<10}{n * REPLS:>6}{ideal:>9.2f}{r['makespan_s']:>12.2f}{r['of_ideal']:>9.2f}{bound / ideal:>12.2f}"
            f"  {r['answered']}"
        )
        rows.append(r)
    return rows


def affinity(costs: list[float]) -> dict[str, Any]:
    """Replicas of AFFINITY_REPLS REPLs: fewer REPLs than headers, as with Mathlib-sized imports."""
    headers = [f"import Mathlib.H{i}\n\n" for i in range(3)]
    out = {}
    for on in (True, False):
        env = {"KIMINA_FAKE_IMPORT_SECONDS": str(IMPORT), "LEAN_SERVER_MAX_REPLS": str(AFFINITY_REPLS)}
        with replicas(3, env) as servers:
            r = asyncio.run(run_counting_imports(servers, batch(costs, headers), affinity=on))
        out["with" if on else "without"] = r
        print(
            f"  3 headers, 3 replicas, affinity {'on ' if on else 'off'}: {r['imports']:>3} imports "
            f"({AFFINITY_REPLS} REPLs per replica), {r['spilled']} spilled, makespan {r['makespan_s']:.2f} s"
        )
    return out


def failover(costs: list[float]) -> dict[str, Any]:
    with replicas(3) as servers:
        calm = asyncio.run(run(servers, batch(costs, [""])))
    with replicas(3) as servers:
        killed = asyncio.run(run(servers, batch(costs, [""]), kill_at=len(costs) // 2))
    lost = killed["makespan_s"] - calm["makespan_s"]
    floor = calm["makespan_s"] / 2 * (3 / 2 - 1)  # about: the second half on 2 replicas instead of 3
    print(
        f"  3 replicas, one killed at 50 %: {killed['makespan_s']:.2f} s against {calm['makespan_s']:.2f} s "
        f"(lost {lost:.2f} s; its capacity for the second half is worth about {floor:.2f} s), "
        f"{killed['resent']} re-sent"
    )
    return {"calm": calm, "killed": killed, "lost_s": round(lost, 3), "capacity_floor_s": round(floor, 3)}


def main() -> dict[str, Any]:
    rng = random.Random(2027)
    costs = [c * SCALE for c in rng.choices(recorded_costs(), k=PROOFS)]
    print(
        f"cluster: {PROOFS} proofs in one call, costs = Kimina times x {SCALE:g} (sum {sum(costs):.1f} s), "
        f"{REPLS} REPLs per replica"
    )
    return {
        "proofs": PROOFS,
        "repls_per_replica": REPLS,
        "scale": SCALE,
        "spread": spread(costs),
        "affinity": affinity(costs[: max(90, PROOFS // 4)]),
        "failover": failover(costs),
    }
