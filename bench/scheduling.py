"""Scheduling efficiency of the supervisor (pure asyncio, real stand-in REPL processes).

Two parts. 8 REPLs: per-proof costs are drawn from the `time` values Kimina recorded for real Goedel proofs
(../shared/fixtures/kimina-match/output), scaled; each proof sleeps its cost in the stand-in (wall
time, so 8 REPLs fit on 2 cores); every import costs IMPORT seconds. Efficiency is the ideal makespan
over the measured one, ideal = import + max(sum(costs) / REPLS, max(costs)). Headers outnumbering
REPLs: 3 interleaved headers on 2 REPLs (the switch policy's case), 90 proofs of 0.1 s each and 90
of Kimina's costs, against the bound (sum(costs) + 3 imports) / 2 (one import per header).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import random
import shlex
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
# A small batch, where the tail of heavy-tailed costs weighs, and a training loop's batch.
SIZES = (400, 2000)
CASES = {
    "1 header": ["import Mathlib"],
    "3 interleaved headers": ["import Mathlib", "import Aesop", "import Mathlib\nimport Aesop"],
}
IMPORT = 1.0
SCALE = 0.05
FEW_REPLS = 2
FEW_PROOFS = 90


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


async def run_once(
    headers: list[str],
    costs: list[float],
    repls: int = REPLS,
    *,
    uses: int = 0,
    jitter: int = 0,
    spares: int = 0,
    hang: frozenset[int] = frozenset(),
    timeout: float = 600,
) -> dict[str, Any]:
    """One run; the proofs in `hang` spin until their `timeout` (TIMEOUT, their REPL killed)."""
    os.environ["KIMINA_FAKE_IMPORT_SECONDS"] = str(IMPORT)
    sup = Supervisor(
        PoolSettings(
            spec=ReplSpec(argv=tuple(shlex.split(fake_repl_command()))),
            max_repls=repls,
            # The stand-in's import is a sleep, not disk I/O: nothing to protect by serialising.
            max_concurrent_imports=repls,
            import_cost_hint=IMPORT,
            max_repl_uses=uses,
            max_repl_uses_jitter=jitter,
            seed=26,
            spare_repls=spares,
        )
    )
    await sup.start()
    items = [
        (
            split_header(
                f"{headers[i % len(headers)]}\ntheorem t{i} : True := by\n"
                + ("  -- fake: hang" if i in hang else f"  -- fake: sleep {c:.4f}\n  trivial")
            ),
            CheckOptions(timeout=timeout if i in hang else 600),
        )
        for i, c in enumerate(costs)
    ]
    start = time.monotonic()
    jobs = sup.submit_many(items)
    outcomes = await asyncio.gather(*(j.future for j in jobs))
    makespan = time.monotonic() - start
    state = sup.state()
    await sup.close()
    assert all(o.verdict is (Verdict.TIMEOUT if i in hang else Verdict.VALID) for i, o in enumerate(outcomes))
    longest = max(costs)
    ideal = IMPORT + max(sum(costs) / repls, longest)
    return {
        "headers": len(headers),
        "proofs": len(costs),
        "ideal_s": round(ideal, 3),
        "makespan_s": round(makespan, 3),
        "efficiency": round(ideal / makespan, 3),
        "imports": state.imports,
        "conversions": state.recycles,
        "warm_swaps": state.warm_swaps,
        "cold_swaps": state.cold_swaps,
    }


def main() -> dict[str, Any]:
    log.configure("WARNING")
    rng = random.Random(2024)
    pool = recorded_costs()
    print(f"scheduling: {REPLS} REPLs, import {IMPORT:g} s, costs = Kimina times x {SCALE:g}")
    print(
        f"  {'case':<24}{'proofs':>7}{'sum(cost) s':>12}{'ideal s':>9}{'makespan s':>12}{'efficiency':>12}"
        f"{'FIFO bound':>12}{'of bound':>10}{'imports':>9}"
    )
    rows = []
    for proofs in SIZES:
        costs = [c * SCALE for c in rng.choices(pool, k=proofs)]
        bound = fifo_bound(costs)
        for case, headers in CASES.items():
            r = asyncio.run(run_once(headers, costs)) | {"case": case}
            r["sum_cost_s"] = round(sum(costs), 1)
            r["max_cost_s"] = round(max(costs), 2)
            r["fifo_bound_makespan_s"] = round(bound, 3)
            r["fifo_bound_efficiency"] = round(r["ideal_s"] / bound, 3)
            r["of_fifo_bound"] = round(bound / r["makespan_s"], 3)
            print(
                f"  {case:<24}{proofs:>7}{r['sum_cost_s']:>12.1f}{r['ideal_s']:>9.2f}{r['makespan_s']:>12.2f}"
                f"{r['efficiency']:>12.3f}{r['fifo_bound_efficiency']:>12.3f}{r['of_fifo_bound']:>10.3f}{r['imports']:>9}"
            )
            rows.append(r)
    print("  FIFO bound: the efficiency of perfect greedy dispatch in arrival order with zero overhead (one header);")
    print("  no scheduler that keeps arrival order without knowing costs in advance beats it.")
    return {
        "repls": REPLS,
        "import_s": IMPORT,
        "scale": SCALE,
        "rows": rows,
        "few_repls": few_repls(rng, pool),
    }


def few_repls(rng: random.Random, pool: list[float]) -> list[dict[str, Any]]:
    """3 interleaved headers on 2 REPLs: imports only when they pay."""
    headers = CASES["3 interleaved headers"]
    print(f"headers outnumber REPLs: 3 interleaved headers on {FEW_REPLS} REPLs, import {IMPORT:g} s")
    print(
        f"  {'costs':<24}{'proofs':>7}{'sum(cost) s':>12}{'bound s':>9}{'makespan s':>12}{'x bound':>9}{'imports':>9}"
    )
    rows = []
    for name, costs in (
        ("0.1 s each", [0.1] * FEW_PROOFS),
        (f"Kimina's x {SCALE:g}", [c * SCALE for c in rng.choices(pool, k=FEW_PROOFS)]),
    ):
        r = asyncio.run(run_once(headers, costs, repls=FEW_REPLS)) | {"costs": name}
        bound = (sum(costs) + len(headers) * IMPORT) / FEW_REPLS
        r["bound_s"] = round(bound, 3)
        r["of_bound"] = round(r["makespan_s"] / bound, 3)
        print(
            f"  {name:<24}{len(costs):>7}{sum(costs):>12.1f}{bound:>9.2f}{r['makespan_s']:>12.2f}"
            f"{r['of_bound']:>9.3f}{r['imports']:>9}"
        )
        rows.append(r)
    print("  bound: every REPL busy from the start, one import per header; 3 headers on 2 REPLs need a 4th.")
    return rows
