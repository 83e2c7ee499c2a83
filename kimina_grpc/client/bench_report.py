"""`kimina-grpc bench`'s report: what was measured, and how much of it was Lean.

A proof answered from the server's cache, or by an identical proof's check already running (a
shared check), took no Lean time of its own: a second run of one dataset is all cache hits and its
proofs/s say nothing about Lean. The report counts both, says so on its first line when they are
most answers, and gives queue and Lean percentiles over the proofs Lean checked for this run alone.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from kimina_grpc.client._types import Result
from kimina_grpc.verdict import Verdict

QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _percentiles(values: list[float]) -> dict[str, float]:
    return {name: percentile(values, q) for name, q in QUANTILES}


def checked_by_lean(r: Result) -> bool:
    """Lean ran for this proof in this run (not a cache hit, not an identical proof's check)."""
    d = r.diagnostics
    return d is None or not (d.from_cache or d.shared_check)


def build(
    results: list[Result], latencies: list[float], wall: float, *, dataset: str, trust: str | None, cache: bool
) -> dict[str, Any]:
    counts = Counter(r.verdict.name for r in results)
    lean_ran = [r for r in results if checked_by_lean(r)]
    hits = sum(1 for r in results if r.diagnostics is not None and r.diagnostics.from_cache)
    lean = [r.time for r in lean_ran]
    return {
        "dataset": dataset,
        "trust": trust or "server default",
        "cache": "on" if cache else "off (--no-cache)",
        "proofs": len(results),
        "wall_seconds": wall,
        "proofs_per_second": len(results) / wall if wall else 0.0,
        "answered_by": {"lean": len(lean_ran), "cache": hits, "shared_check": len(results) - len(lean_ran) - hits},
        "verdicts": {v.name: counts.get(v.name, 0) for v in Verdict if v is not Verdict.UNSPECIFIED},
        "latency_seconds": _percentiles(latencies),
        "queue_seconds": _percentiles([r.diagnostics.queue_seconds for r in lean_ran if r.diagnostics]),
        "check_seconds": _percentiles([r.diagnostics.check_seconds for r in lean_ran if r.diagnostics]),
        "lean_seconds": {"total": sum(lean), "mean": statistics.mean(lean) if lean else 0.0},
    }


def headline(report: dict[str, Any]) -> str:
    """The first line: the rate, and whether it measures Lean at all."""
    n = report["proofs"]
    by = report["answered_by"]
    line = f"{n} proofs in {report['wall_seconds']:.1f} s: {report['proofs_per_second']:.1f} proofs/s"
    not_lean = n - by["lean"]
    if n and not_lean * 2 > n:
        return (
            f"{line}, but {not_lean} of {n} answers were not checked by Lean ({by['cache']} from the cache, "
            f"{by['shared_check']} shared checks): not Lean's throughput; run with --no-cache to measure it"
        )
    return f"{line} (Lean checked {by['lean']}, {by['cache']} from the cache, {by['shared_check']} shared checks)"


def print_summary(report: dict[str, Any], output: Path) -> None:
    n = max(1, report["proofs"])
    print(f"\n{headline(report)}")
    for name, count in report["verdicts"].items():
        print(f"  {name:<14}{count:>7}  {100 * count / n:5.1f} %")
    for label, key in (
        ("latency", "latency_seconds"),
        ("queue (Lean ran)", "queue_seconds"),
        ("Lean check", "check_seconds"),
    ):
        p = report[key]
        print(f"  {label} p50 {p['p50']:.3f} s  p90 {p['p90']:.3f} s  p99 {p['p99']:.3f} s")
    lean = report["lean_seconds"]
    print(f"  Lean seconds: total {lean['total']:.1f}, mean {lean['mean']:.3f} (proofs Lean checked in this run)")
    for address, c in report.get("backends", {}).items():
        print(f"  backend {address}: {c['answered']} answered, {c['resent']} re-sent elsewhere ({c['state']})")
    print(f"  report: {output / 'report.json'}, plot: {output / 'report.png'}")


def plot(latencies: list[float], done_at: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.hist(latencies, bins=40, color="#4477aa")
    left.set_xlabel("latency (s)")
    left.set_ylabel("proofs")
    left.set_title("Latency per proof")
    right.plot(sorted(done_at), range(1, len(done_at) + 1), color="#228833")
    right.set_xlabel("time since start (s)")
    right.set_ylabel("proofs completed")
    right.set_title("Completions over time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
