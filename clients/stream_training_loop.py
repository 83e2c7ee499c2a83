"""A training loop's view: stream candidate proofs, get verdicts as they finish, keep the server busy.

    python clients/stream_training_loop.py --target localhost:50051
(try it against `make demo`, the server with the stand-in REPL).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Iterator

from kimina_grpc.client import KiminaClient, KiminaError, Proof


def candidates(n: int) -> Iterator[Proof]:
    """Stands for a model sampling proofs; a generator, so nothing waits for the whole batch."""
    for i in range(n):
        yield Proof(f"sample-{i}", f"import Mathlib\n\ntheorem t{i} : {i} + 0 = {i} := by\n  simp\n")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="localhost:50051")
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    rewards: Counter[str] = Counter()
    try:
        with KiminaClient(args.target, api_key=os.environ.get("LEAN_SERVER_API_KEY")) as client:
            for result in client.verify_stream(candidates(args.n), timeout=60, window=64):
                rewards[result.verdict.name] += 1  # e.g. reward 1.0 for VALID, 0 otherwise
                if result.verdict.name == "INVALID":
                    first = result.messages[0] if result.messages else None
                    print(result.id, "INVALID", first and f"{first.line}:{first.column} {first.text}")
    except (KiminaError, ValueError) as exc:
        print(f"stream_training_loop.py: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print(dict(rewards))
    return 0


if __name__ == "__main__":
    sys.exit(main())
