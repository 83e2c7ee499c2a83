"""The result cache and in-flight dedupe on a GRPO-shaped workload (the cache layer and the pool,
real stand-in REPL processes, pure asyncio).

One training step: 64 problems x 16 sampled proofs, sent as one batch. Within each problem a share
of the samples are byte-identical copies of another sample of the same problem (0, 25, 50 %). Each
distinct proof's Lean cost is drawn from the times Kimina recorded for real Goedel proofs, scaled as
in scheduling.py; the stand-in sleeps it. Lean-seconds = the summed cost of the checks that ran.
The cost of a miss: proofs with an instant check, one at a time, every one distinct, with and
without the cache; the difference of the median round trips is what a miss adds.
"""

from __future__ import annotations

import asyncio
import os
import random
import shlex
import shutil
import statistics
import time
from typing import Any

from bench.scheduling import recorded_costs
from kimina_grpc import log
from kimina_grpc.cache import CheckCache, MemoryStore, RedisStore
from kimina_grpc.repl import ReplSpec, Split, split_header
from kimina_grpc.supervisor import CheckOptions, PoolSettings, Supervisor
from kimina_grpc.testing import fake_repl_command, redis_server

PROBLEMS = 64
SAMPLES = 16
DUPLICATES = (0.0, 0.25, 0.5)
REPLS = 8
IMPORT = 0.5
SCALE = 0.01
HEADER = "import Mathlib"
LATENCY_PROOFS = 300


def workload(rng: random.Random, duplicates: float, pool: list[float]) -> list[tuple[Split, CheckOptions]]:
    """Problem by problem: round(16 x duplicates) samples copy another sample of their problem."""
    items = []
    copies = round(SAMPLES * duplicates)
    for p in range(PROBLEMS):
        distinct = []
        for s in range(SAMPLES - copies):
            cost = rng.choice(pool) * SCALE
            wrong = "  -- fake: error linarith failed\n" if rng.random() < 0.4 else ""
            distinct.append(
                f"{HEADER}\ntheorem p{p} : True := by\n  -- fake: sleep {cost:.4f}\n{wrong}  trivial -- s{s}"
            )
        group = distinct + [rng.choice(distinct) for _ in range(copies)]
        rng.shuffle(group)
        items += [(split_header(code), CheckOptions(timeout=600)) for code in group]
    return items


async def _pool(repls: int) -> Supervisor:
    os.environ["KIMINA_FAKE_IMPORT_SECONDS"] = str(IMPORT)
    sup = Supervisor(
        PoolSettings(
            spec=ReplSpec(argv=tuple(shlex.split(fake_repl_command()))),
            max_repls=repls,
            max_concurrent_imports=repls,
            import_cost_hint=IMPORT,
            init_repls={HEADER: repls},
        )
    )
    await sup.start()
    while not sup.ready:  # time the checks, not the imports
        await asyncio.sleep(0.02)
    return sup


def _layer(sup: Supervisor, mode: str, redis_url: str | None) -> CheckCache:
    remote = RedisStore(redis_url, ttl=3600, timeout=0.1, retry_seconds=2) if redis_url and "redis" in mode else None
    return CheckCache(
        sup, f"bench-{time.time_ns()}", enabled=mode != "off", memory=MemoryStore(256 << 20), remote=remote
    )


async def run_step(items: list[tuple[Split, CheckOptions]], mode: str, redis_url: str | None) -> dict[str, Any]:
    sup = await _pool(REPLS)
    cache = _layer(sup, mode, redis_url)
    try:
        start = time.monotonic()
        tickets = await cache.submit_many(items)
        outcomes = await asyncio.gather(*(t.future for t in tickets))
        makespan = time.monotonic() - start
    finally:
        await cache.close()
        await sup.close()
    ran = [o for o in outcomes if not (o.from_cache or o.shared)]
    return {
        "mode": mode,
        "proofs": len(items),
        "distinct": len({(s.header, s.body) for s, _ in items}),
        "checks": len(ran),
        "lean_s": round(sum(o.time_seconds for o in ran), 2),
        "makespan_s": round(makespan, 2),
        "proofs_per_s": round(len(items) / makespan, 1),
    }


async def miss_latency(mode: str, redis_url: str | None) -> float:
    """Median seconds from submit to answer of a distinct proof with an instant check."""
    sup = await _pool(1)
    cache = _layer(sup, mode, redis_url)
    times = []
    try:
        for i in range(LATENCY_PROOFS):
            split = split_header(f"{HEADER}\ntheorem q{i} : True := by\n  trivial")
            start = time.perf_counter()
            (ticket,) = await cache.submit_many([(split, CheckOptions(timeout=60))])
            await ticket.future
            times.append(time.perf_counter() - start)
    finally:
        await cache.close()
        await sup.close()
    return statistics.median(times)


async def run_all(redis_url: str | None) -> dict[str, Any]:
    modes = ["off", "memory"] + (["memory+redis"] if redis_url else [])
    pool = recorded_costs()
    rows = []
    print(f"  {'duplicates':>10}{'mode':>14}{'proofs':>8}{'checks':>8}{'Lean-s':>9}{'makespan s':>12}{'proofs/s':>10}")
    for dup in DUPLICATES:
        items = workload(random.Random(16), dup, pool)
        for mode in modes:
            r = await run_step(items, mode, redis_url) | {"duplicates": dup}
            print(
                f"  {dup:>10.0%}{mode:>14}{r['proofs']:>8}{r['checks']:>8}{r['lean_s']:>9.1f}"
                f"{r['makespan_s']:>12.2f}{r['proofs_per_s']:>10.1f}"
            )
            rows.append(r)
    latency = {mode: await miss_latency(mode, redis_url) for mode in modes}
    base = latency["off"]
    print(f"  cost of a miss at 0 % duplicates (median round trip of an instant check, {LATENCY_PROOFS} proofs):")
    for mode, seconds in latency.items():
        extra = "" if mode == "off" else f"  (+{(seconds - base) * 1e3:.2f} ms per proof)"
        print(f"    {mode:<14}{seconds * 1e3:8.2f} ms{extra}")
    return {
        "problems": PROBLEMS,
        "samples": SAMPLES,
        "repls": REPLS,
        "scale": SCALE,
        "rows": rows,
        "miss_latency_s": {m: round(s, 6) for m, s in latency.items()},
        "miss_added_ms": {m: round((s - base) * 1e3, 3) for m, s in latency.items() if m != "off"},
    }


def main() -> dict[str, Any]:
    log.configure("ERROR")
    print(
        f"cache: {PROBLEMS} problems x {SAMPLES} samples in one batch, {REPLS} REPLs, "
        f"costs = Kimina times x {SCALE:g}, import {IMPORT:g} s"
    )
    if shutil.which("redis-server") is None:
        print("  (redis-server not found: the memory+redis rows are skipped)")
        return asyncio.run(run_all(None))
    with redis_server() as (_, port):
        return asyncio.run(run_all(f"redis://127.0.0.1:{port}/0"))
