"""Reward functions for RL trainers, on the Python client alone (no TRL or verl import).

    from kimina_grpc.rewards import trl_reward, verl_reward

    trainer = GRPOTrainer(..., reward_funcs=[trl_reward(target="lean:50051")])   # TRL
    compute_score = verl_reward(target="lean:50051")                             # verl

Both check a whole group of completions in one `StreamVerify` call, map verdicts to rewards with a
table (`DEFAULT_REWARDS`: VALID 1.0, anything else 0.0), never raise on a bad completion (it scores
`unparsable_reward` with the reason in the info) and ride out a server that is briefly unavailable
(the client's bounded retries, about a minute, then `RewardServerError`). A request the server
refuses for a reason that is not the completion's (a trust level without a theorem name, a bad
option) is a configuration mistake: it raises ValueError instead of scoring every completion 0.

Lean code is taken from a completion as prover models write it (`extract`), after dropping the
reasoning (`<think>...</think>`, or everything before a lone `</think>`, or an unclosed `<think>` to
the end):
- "last_block" (default): the last ```lean4 or ```lean fenced block (how Kimina-Prover,
  DeepSeek-Prover-V2 and Goedel-Prover answer); no closed block, or an unclosed fence after the last
  closed one (the answer was cut off: an earlier block is a draft), is unparsable;
- "statement": the formal statement followed by the model's continuation up to a closing fence
  (models prompted with the statement and an open fence, e.g. DeepSeek-Prover-V1.5);
- "auto": the last block if there is one, else the statement plus the continuation.
When a block has no `import` line, the header (dataset column) is put in front of it. When the
formal statement is known, the checked code must contain its declaration unchanged: the text from
its `theorem`/`lemma` keyword to its `:=`, compared with comments and doc comments removed,
whitespace collapsed and `lemma` read as `theorem` (so imports, `open` lines and a docstring may be
left out). A model that rewrites the statement gets no reward. The check is textual: a local
notation or instance that reinterprets the statement passes it (checking the theorem's type needs
Lean: `trust="audit"`), and so does a statement inside a string literal.
"""

from __future__ import annotations

from typing import Any

from kimina_grpc.rewards.checker import RETRY_ATTEMPTS, RewardServerError
from kimina_grpc.rewards.extract import Extract, Unparsable, completion_text, extract_lean
from kimina_grpc.rewards.lean import LeanReward
from kimina_grpc.rewards.table import DEFAULT_REWARDS, INFRA_VERDICTS, UNPARSABLE, RewardInfo, RewardTable
from kimina_grpc.rewards.verl import VerlReward

__all__ = [
    "DEFAULT_REWARDS",
    "INFRA_VERDICTS",
    "RETRY_ATTEMPTS",
    "UNPARSABLE",
    "Extract",
    "LeanReward",
    "RewardInfo",
    "RewardServerError",
    "RewardTable",
    "Unparsable",
    "VerlReward",
    "completion_text",
    "extract_lean",
    "trl_reward",
    "verl_reward",
]


def trl_reward(target: str = "localhost:50051", **options: Any) -> LeanReward:
    """A reward function for TRL's GRPOTrainer (`reward_funcs=[trl_reward(target=...)]`); `options`
    as LeanReward's (extract, rewards, columns, timeout, ...). Details of the last call:
    `.last_infos`."""
    return LeanReward(target, **options)


def verl_reward(target: str = "localhost:50051", **options: Any) -> VerlReward:
    """verl's `compute_score` (batched or per sample, see VerlReward); `options` as LeanReward's."""
    return VerlReward(target, **options)
