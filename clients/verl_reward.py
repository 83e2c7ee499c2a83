"""verl's custom reward function on kimina-grpc (verl itself is not needed to run this file).

As verl's reward file (the batch manager sends a whole batch in one call, checked in one stream):

    reward_model.reward_manager=batch \
    custom_reward_function.path=clients/verl_reward.py \
    custom_reward_function.name=compute_score
    # and KIMINA_GRPC_TARGET=lean-verifier:50051 in the workers' environment

With verl's default (naive) manager, compute_score is called once per sample; that works too (calls
from concurrent workers that arrive while a check is in flight share the next stream).
`ground_truth` is taken as the formal statement; `extra_info` may carry `header` and `theorem_name`.

    python clients/verl_reward.py --target localhost:50051       (a toy batch against `make demo`)
"""

from __future__ import annotations

import argparse
import os
import sys

from kimina_grpc.rewards import RewardServerError, verl_reward

compute_score = verl_reward(target=os.environ.get("KIMINA_GRPC_TARGET", "localhost:50051"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default=None, help="default: $KIMINA_GRPC_TARGET or localhost:50051")
    args = parser.parse_args()
    # A toy run gives up within seconds when nothing listens; in training keep the default (about 60 s).
    score = verl_reward(target=args.target or compute_score.target, max_attempts=3)
    statement = "theorem two : 1 + 1 = 2 := by sorry"
    good = "```lean4\ntheorem two : 1 + 1 = 2 := by\n  norm_num\n```"
    cheat = "```lean4\ntheorem two : 1 + 1 = 2 := by\n  -- fake: sorry\n```"
    try:
        # How verl's batch manager calls it: keyword lists, one entry per sample.
        batch = score(
            data_sources=["toy"] * 3,
            solution_strs=[good, cheat, "no idea"],
            ground_truths=[statement] * 3,
            extra_infos=[{"header": "import Mathlib"}] * 3,
        )
        for item in batch:
            print(f"batch   {item['score']:.1f}  {item['verdict']:<10}  {item['reason']}")
        # How the naive manager calls it: one sample at a time.
        one = score("toy", good, statement, {"header": "import Mathlib"})
        print(f"single  {one['score']:.1f}  {one['verdict']:<10}  {one['reason']}")
    except (RewardServerError, ValueError) as exc:
        print(f"verl_reward.py: {exc}", file=sys.stderr)
        return 2
    finally:
        score.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
