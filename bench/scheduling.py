"""Scheduling efficiency of the supervisor (pure asyncio, real stand-in REPL processes).

Per-proof costs are drawn from the `time` values Kimina recorded for real Goedel proofs
(../shared/fixtures/kimina-match/output), scaled; each proof sleeps its cost in the stand-in (wall
time, so 8 REPLs fit on 2 cores); every import costs IMPORT seconds. Efficiency is the ideal makespan
over the measured one, ideal = import + max(sum(costs) / REPLS, max(costs)).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import random
import shlex
import statistics
import time
from pathlib import Path
from typing import Any

from kimina_grpc import log
from kimina_grpc.repl import ReplSpec, Verdict, split_header
from kimina_grpc.supervisor import CheckOptions, PoolSettings, Supervisor
from kimina_grpc.testing import fake_repl_command

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("KIMINA_FIXTURES", ROOT.parent / "shared" / "fixtures"))

REPLS = 8
PROOFS = 400
IMPORT = 1.0
SCALE = 0.05


def recorded_costs() -> list[float]:
    costs = []
    for path in sorted((FIXTURES / "kimina-match" / "output").glob("*.json")):
        response = json.loads(path.read_text())["results"][0]["response"]
        if response is not None:
            costs.append(float(response["time"]))
    return costs


def fifo_bound(costs: list[float]) -> float:
    """The makespan of perfect greedy FIFO dispatch (no overhead, imports in parallel at t=0): the
    best any scheduler can do that runs a header's proofs in arrival order without knowing their
    costs in advance."""
    free = [IMPORT] * REPLS
    for c in costs:
        t = heapq.heappop(free)
        heapq.heappush(free, t + c)
    return max(free)


async def run_once(headers: list[str], costs: list[float]) -> dict[str, Any]:
    os.environ["KIMINA_FAKE_IMPORT_SECONDS"] = str(IMPORT)
    sup = Supervisor(
        PoolSettings(
            spec=ReplSpec(argv=tuple(shlex.split(fake_repl_command()))),
            max_repls=REPLS,
            # The stand-in's import is a sleep, not disk I/O: nothing to protect by serialising.
            max_concurrent_imports=REPLS,
            import_cost_hint=IMPORT,
        )
    )
    await sup.start()
    items = [
        (
            split_header(
                f"{headers[i % len(headers)]}\ntheorem t{i} : True := by\n  -- fake: sleep {c:.4f}\n  trivial"
            ),
            CheckOptions(timeout=600),
        )
        for i, c in enumerate(costs)
    ]
    start = time.monotonic()
    jobs = sup.submit_many(items)
    outcomes = await asyncio.gather(*(j.future for j in jobs))
    makespan = time.monotonic() - start
    state = sup.state()
    await sup.close()
    assert all(o.verdict is Verdict.VALID for o in outcomes)
    longest = max(costs)
    ideal = IMPORT + max(sum(costs) / REPLS, longest)
    return {
        "headers": len(headers),
        "proofs": len(costs),
        "ideal_s": round(ideal, 3),
        "makespan_s": round(makespan, 3),
        "efficiency": round(ideal / makespan, 3),
        "imports": state.imports,
        "conversions": state.recycles,
    }


def main() -> dict[str, Any]:
    log.configure("WARNING")
    rng = random.Random(2024)
    pool = recorded_costs()
    costs = [c * SCALE for c in rng.choices(pool, k=PROOFS)]
    rows = [
        asyncio.run(run_once(["import Mathlib"], costs)) | {"case": "1 header"},
        asyncio.run(run_once(["import Mathlib", "import Aesop", "import Mathlib\nimport Aesop"], costs))
        | {"case": "3 interleaved headers"},
    ]
    print(f"scheduling: {REPLS} REPLs, {PROOFS} proofs, import {IMPORT:g} s, costs = Kimina times x {SCALE:g}")
    print(f"  sum(cost) {sum(costs):.1f} s, mean {statistics.mean(costs):.3f} s, max {max(costs):.2f} s")
    bound = fifo_bound(costs)
    ideal = rows[0]["ideal_s"]
    print(f"  FIFO bound: makespan {bound:.2f} s, efficiency {ideal / bound:.3f} (no arrival-order scheduler beats it)")
    print(f"  {'case':<24}{'ideal s':>9}{'makespan s':>12}{'efficiency':>12}{'of FIFO bound':>15}{'imports':>9}")
    for r in rows:
        r["of_fifo_bound"] = round(bound / r["makespan_s"], 3)
        print(
            f"  {r['case']:<24}{r['ideal_s']:>9.2f}{r['makespan_s']:>12.2f}{r['efficiency']:>12.3f}"
            f"{r['of_fifo_bound']:>15.3f}{r['imports']:>9}"
        )
    return {
        "repls": REPLS,
        "proofs": PROOFS,
        "import_s": IMPORT,
        "scale": SCALE,
        "fifo_bound_makespan_s": round(bound, 3),
        "rows": rows,
    }
