"""A reward function for TRL's GRPOTrainer, checked on a toy group (TRL itself is not needed here).

    python clients/trl_reward.py --target localhost:50051        (try it against `make demo`)

In a training script:

    from trl import GRPOConfig, GRPOTrainer
    from kimina_grpc.rewards import trl_reward

    lean = trl_reward(target="lean-verifier:50051", timeout=60)      # VALID -> 1.0, else 0.0
    trainer = GRPOTrainer(model=..., reward_funcs=[lean], train_dataset=dataset, args=GRPOConfig(...))

TRL calls it with the group's `prompts` and `completions` (strings, or chat messages) and every other
dataset column as a keyword argument: `formal_statement`, `header` and `theorem_name` are used when
present (rename them with statement_column=..., header_column=..., name_column=...).
"""

from __future__ import annotations

import argparse
import sys

from kimina_grpc.rewards import RewardServerError, trl_reward

STATEMENT = "theorem add_zero' (n : Nat) : n + 0 = n := by sorry"


def toy_group() -> list[object]:
    """Four samples for one prompt, as a prover model writes them: two in chat form."""
    proof = "```lean4\ntheorem add_zero' (n : Nat) : n + 0 = n := by\n  simp\n```"
    wrong = "```lean4\ntheorem add_zero' (n : Nat) : n + 0 = n := by\n  -- fake: error unsolved goals\n  rfl\n```"
    return [
        f"Simp closes it.\n{proof}",
        [{"role": "assistant", "content": f"Try rfl.\n{wrong}"}],
        "I am not sure how to prove this.",
        [{"role": "assistant", "content": proof}],
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="localhost:50051")
    args = parser.parse_args()
    # A toy run gives up within seconds when nothing listens; in training keep the default (about 60 s).
    reward = trl_reward(target=args.target, rewards={"VALID": 1.0, "SORRY": 0.1}, max_attempts=3)
    group = toy_group()
    try:
        rewards = reward(
            prompts=["Prove it."] * len(group),
            completions=group,
            formal_statement=[STATEMENT] * len(group),
            header=["import Mathlib"] * len(group),
        )
    except (RewardServerError, ValueError) as exc:
        print(f"trl_reward.py: {exc}", file=sys.stderr)
        return 2
    finally:
        reward.close()
    for value, info in zip(rewards, reward.last_infos, strict=True):
        print(f"{value:.1f}  {info.verdict:<10}  {info.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
