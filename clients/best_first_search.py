"""Best-first search over tactics in one ProofSession: expand the open state with the fewest goals,
try every tactic of a small list on it (pipelined), stop at the first path the server's `finish`
calls VALID.

python clients/best_first_search.py --target localhost:50051            # the stand-in's demo problem
python clients/best_first_search.py --code "theorem t ... := by sorry" --tactic "simp" --tactic "omega"

The demo's tactics carry stand-in directives (`-- fake: ...`, see kimina_grpc/testing/fake_tactics.py)
so that it finds a proof on a server running the stand-in REPL; against real Lean, pass your own.
Exit 0 with the proof on stdout when one is found, 1 when the search runs out, 2 on a server error.
"""

from __future__ import annotations

import argparse
import heapq
import sys

from kimina_grpc.client import KiminaClient, KiminaError, Session

DEMO = "theorem demo (p q r : Prop) (hp : p) (hq : q) (hr : r) : p ∧ (q ∧ r) := by sorry"
DEMO_TACTICS = [
    "constructor\n-- fake: when p ∧ (q ∧ r)\n-- fake: goals p || q ∧ r",
    "constructor\n-- fake: when q ∧ r\n-- fake: goals q || r",
    "exact hp\n-- fake: when p\n-- fake: done",
    "exact hq\n-- fake: when q\n-- fake: done",
    "exact hr\n-- fake: when r\n-- fake: done",
    "skip",
]


def search(session: Session, tactics: list[str], budget: int) -> str | None:
    """The first VALID proof found within `budget` expansions, or None."""
    frontier = [(1, 0, root.state) for root in session.roots]
    heapq.heapify(frontier)
    seen: set[tuple[str, ...]] = set()
    order = 1
    for _ in range(budget):
        if not frontier:
            return None
        _, _, state = heapq.heappop(frontier)
        for step in session.run_many([(state, t) for t in tactics]):
            if step.status == "proof_complete":
                finished = session.finish(step.state)
                if finished.result.ok:
                    return finished.proof
            elif step.status == "incomplete" and step.goals not in seen:
                seen.add(step.goals)
                order += 1
                heapq.heappush(frontier, (len(step.goals), order, step.state))
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="localhost:50051")
    parser.add_argument("--code", default=f"import Demo\n\n{DEMO}", help="a file whose `sorry` is the goal")
    parser.add_argument("--tactic", action="append", help="a tactic to try (repeat); default: the demo's")
    parser.add_argument("--budget", type=int, default=50, help="states to expand at most")
    parser.add_argument("--trust", default="check", choices=["check", "audit", "judge"])
    args = parser.parse_args()
    try:
        with KiminaClient(args.target) as client, client.session(args.code, trust=args.trust) as session:
            proof = search(session, args.tactic or DEMO_TACTICS, args.budget)
    except KiminaError as exc:
        print(f"best_first_search.py: {exc}", file=sys.stderr)
        return 2
    if proof is None:
        print("no proof found", file=sys.stderr)
        return 1
    print(proof)
    return 0


if __name__ == "__main__":
    sys.exit(main())
