"""What trust costs: seconds per proof at audit and judge over check, on the pool with the stand-in.

Each proof costs PROOF_SECONDS of "Lean" (a sleep in the stand-in) and every import, the pool's and
the judge's header and unpickle alike, IMPORT_SECONDS (KIMINA_FAKE_IMPORT_SECONDS: scale it to your
header, 10-20 s for Mathlib). Proofs run one at a time on one warm REPL, with a reference statement, so the table
reads as the added latency of one proof; the judge's extra is about two imports (the header's, where it
elaborates the reference, and the pickle's) plus process start.
"""

from __future__ import annotations

import asyncio
import shlex
import statistics
import time
from typing import Any

from kimina_grpc import log
from kimina_grpc.repl import ReplSpec, Verdict, split_header
from kimina_grpc.supervisor import CheckOptions, PoolSettings, Supervisor
from kimina_grpc.supervisor.jobs import TrustLevel, TrustPolicy
from kimina_grpc.testing import fake_repl_command

IMPORT_SECONDS = 1.0
PROOF_SECONDS = 0.2
PROOFS = 8
STATEMENT = "theorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := by sorry"
CODE = f"import Mathlib\n\ntheorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := by omega\n-- fake: sleep {PROOF_SECONDS}"


async def run() -> dict[str, Any]:
    spec = ReplSpec(
        argv=tuple(shlex.split(fake_repl_command())), env={"KIMINA_FAKE_IMPORT_SECONDS": str(IMPORT_SECONDS)}
    )
    sup = Supervisor(PoolSettings(spec=spec, max_repls=1, import_cost_hint=IMPORT_SECONDS))
    await sup.start()
    split = split_header(CODE)
    out: dict[str, Any] = {"import_seconds": IMPORT_SECONDS, "proof_seconds": PROOF_SECONDS, "proofs": PROOFS}
    try:
        await sup.submit(split, CheckOptions(timeout=60)).future  # the pool's import, paid once
        for level in TrustLevel:
            trust = None if level is TrustLevel.CHECK else TrustPolicy(level, "t", STATEMENT)
            times = []
            for _ in range(PROOFS):
                start = time.perf_counter()
                outcome = await sup.submit(split, CheckOptions(timeout=60, trust=trust)).future
                times.append(time.perf_counter() - start)
                assert outcome.verdict is Verdict.VALID, outcome
            out[level.name.lower()] = statistics.mean(times)
    finally:
        await sup.close()
    return out


def main() -> dict[str, Any]:
    log.configure("WARNING", "dev")
    data = asyncio.run(run())
    check = data["check"]
    print(
        f"\nTrust cost per proof (stand-in: import {IMPORT_SECONDS:g} s, proof {PROOF_SECONDS:g} s,"
        f" {PROOFS} proofs each)"
    )
    print(f"  {'level':<8}{'ms/proof':>10}{'over check':>12}")
    for level in ("check", "audit", "judge"):
        print(f"  {level:<8}{1000 * data[level]:>10.1f}{1000 * (data[level] - check):>+12.1f}")
    return data
