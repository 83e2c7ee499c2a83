"""`bench scheduling`'s recycling case: REPLs recycled every MAX_REPL_USES=25 proofs and 5 % of the
proofs spinning until their timeout (their REPL killed), with 0, 1 and 2 warm spares (each REPL's
limit jittered by up to USES / 10, the default; 2 spares also without jitter), against the
same workload with neither (the spinning proofs then simply run for their timeout: those seconds are
work, unavoidable; what the spares hide is the imports of the killed and recycled REPLs' successors).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from bench import scheduling

USES = 25
JITTER = USES // 10  # LEAN_SERVER_MAX_REPL_USES_JITTER's default
TIMEOUT_SHARE = 0.05
PROOFS = 400
HEADER = ["import Mathlib"]


def main() -> list[dict[str, Any]]:
    rng = random.Random(26)
    pool = scheduling.recorded_costs()
    timeout = 20 * scheduling.SCALE  # a 20 s timeout, scaled like the costs
    costs = [c * scheduling.SCALE for c in rng.choices(pool, k=PROOFS)]
    hang = frozenset(rng.sample(range(PROOFS), k=int(PROOFS * TIMEOUT_SHARE)))
    # The reference: the spinning proofs run their timeout's seconds and answer; nothing recycled.
    reference_costs = [timeout if i in hang else c for i, c in enumerate(costs)]
    print(
        f"recycling: {scheduling.REPLS} REPLs, 1 header, {PROOFS} proofs, MAX_REPL_USES={USES} "
        f"(jitter {JITTER}), "
        f"{len(hang)} proofs time out after {timeout:g} s, import {scheduling.IMPORT:g} s"
    )
    print(f"  {'case':<45}{'makespan s':>12}{'x reference':>13}{'imports':>9}{'warm swaps':>12}{'cold swaps':>12}")
    reference = asyncio.run(scheduling.run_once(HEADER, reference_costs)) | {
        "case": "reference (no recycling, no kills)"
    }
    rows = [reference]
    for spares, jitter in ((0, JITTER), (1, JITTER), (2, JITTER), (2, 0)):
        run = scheduling.run_once(HEADER, costs, uses=USES, jitter=jitter, spares=spares, hang=hang, timeout=timeout)
        case = f"recycling + timeouts, {spares} spare{'s' if spares != 1 else ''}" + ("" if jitter else ", no jitter")
        rows.append(asyncio.run(run) | {"case": case})
    for r in rows:
        r["of_reference"] = round(r["makespan_s"] / reference["makespan_s"], 3)
        print(
            f"  {r['case']:<45}{r['makespan_s']:>12.2f}{r['of_reference']:>13.3f}{r['imports']:>9}"
            f"{r['warm_swaps']:>12}{r['cold_swaps']:>12}"
        )
    print("  goal: 2 spares within 5 % of the reference (shared machine: compare rows of one run)")
    return rows
