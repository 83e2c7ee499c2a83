"""`python -m bench [NAME ...]`: run benchmarks, print their tables, write bench/results/NAME.json."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    cache,
    cluster,
    overhead,
    prooflog,
    recycling,
    sandbox,
    scheduling,
    sessions,
    stall,
    startup,
    trust,
    unread,
)

BENCHES: dict[str, Callable[[], dict[str, Any]]] = {
    "cache": cache.main,
    "cluster": cluster.main,
    "overhead": overhead.main,
    "prooflog": prooflog.main,
    "sandbox": sandbox.main,
    "scheduling": lambda: scheduling.main() | {"recycling": recycling.main()},
    "sessions": sessions.main,
    "stall": stall.main,
    "startup": startup.main,
    "trust": trust.main,
    "unread": unread.main,
}
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    for name in names:
        data = BENCHES[name]()
        path = RESULTS / f"{name}.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"  -> {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
