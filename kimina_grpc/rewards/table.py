"""The reward policy, a pure object: which reward a verdict earns, and why (RewardInfo). No client,
no process: `RewardTable.info` maps a Result the same way wherever it came from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kimina_grpc.client._types import Result
from kimina_grpc.verdict import Verdict

DEFAULT_REWARDS: Mapping[str, float] = {"VALID": 1.0}
"""Reward per verdict name; a verdict not in the table scores 0.0 (REPL_ERROR and NOT_CHECKED:
`infra_reward`). E.g. {"VALID": 1.0, "SORRY": 0.1} to shape; UNTRUSTED is the trust levels' verdict."""
UNPARSABLE = "UNPARSABLE"
"""The verdict recorded for a completion with no Lean code to check (it is never sent)."""
INFRA_VERDICTS = frozenset({"REPL_ERROR", "NOT_CHECKED"})
"""Verdicts that say nothing about the completion (the REPL or the server failed it)."""


@dataclass(frozen=True, slots=True)
class RewardInfo:
    """Why a completion got its reward."""

    reward: float | None
    """None: `infra_reward=None` and the infrastructure failed the completion."""
    verdict: str
    """A Verdict name, or UNPARSABLE."""
    reason: str
    """Empty for VALID; else what went wrong (Lean's first error, the extraction problem, ...)."""
    code: str | None
    """The Lean code that was checked (None when nothing could be extracted)."""
    result: Result | None


@dataclass(frozen=True, slots=True)
class RewardTable:
    """Verdict -> reward (see LeanReward for the three knobs)."""

    rewards: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_REWARDS))
    unparsable_reward: float = 0.0
    infra_reward: float | None = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.rewards) - {v.name for v in Verdict}
        if unknown:
            raise ValueError(f"rewards names unknown verdicts: {sorted(unknown)}")

    def unparsable(self, why: str) -> RewardInfo:
        """A completion with no Lean code to check (never sent)."""
        return RewardInfo(self.unparsable_reward, UNPARSABLE, why, None, None)

    def info(self, result: Result, code: str) -> RewardInfo:
        return RewardInfo(self.reward(result), result.verdict.name, _reason(result), code, result)

    def reward(self, result: Result) -> float | None:
        verdict = result.verdict.name
        if verdict in self.rewards:
            return self.rewards[verdict]
        if verdict == "NOT_CHECKED" and _refused_code(result.error):
            return self.unparsable_reward  # the completion's own fault (too long for the server)
        return self.infra_reward if verdict in INFRA_VERDICTS else 0.0


def misconfigured(results: Sequence[Result]) -> str:
    """The server's refusal of a request for a reason that is not a completion's (a trust level
    without a theorem name, a bad option), or "": every completion would score the same 0 for it."""
    return next((r.error for r in results if r.error.startswith("invalid: ") and not _refused_code(r.error)), "")


def _refused_code(error: str) -> bool:
    """Whether the server refused the proof for its code alone (too long): the completion's fault."""
    if not error.startswith("invalid: "):
        return False
    return all(part.startswith("proof.code:") for part in error.removeprefix("invalid: ").split("; "))


def _reason(result: Result) -> str:
    if result.verdict is Verdict.VALID:
        return ""
    first = next((m for m in result.messages if m.severity == "error"), None)
    if result.verdict is Verdict.INVALID and first is not None:
        return f"{first.line}:{first.column}: {first.text}"
    return result.reason or result.error or result.verdict.name  # reason: why the trust level rejected it
