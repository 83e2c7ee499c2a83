"""verl's reward function (`compute_score`), batched or per sample, on LeanReward."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kimina_grpc.rewards.gather import Gather
from kimina_grpc.rewards.lean import LeanReward, column_values

_SAMPLE_ARGS = ("data_source", "solution_str", "ground_truth", "extra_info")


class VerlReward(LeanReward):
    """verl's custom reward function, both conventions:

    - batched, for `reward_model.reward_manager=batch`: `(data_sources, solution_strs, ground_truths,
      extra_infos, **reward_kwargs)` -> one dict per sample, {"score", "verdict", "reason"}: the whole
      batch is one streamed call;
    - per sample, for verl's default (naive) manager: `(data_source, solution_str, ground_truth,
      extra_info=None)` -> the same dict. Calls that arrive while a check is in flight (concurrent
      workers) are gathered into the next call: a caller never waits for others to arrive, and
      concurrent callers share RPCs.

    The formal statement, header and theorem name come from `extra_info` (the column names), the
    statement else from `ground_truth` when it is a string.
    """

    def __init__(self, target: str = "localhost:50051", *, name: str = "compute_score", **options: Any) -> None:
        super().__init__(target, name=name, **options)
        self._samples: Gather[dict[str, Any], dict[str, Any]] = Gather()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_samples"] = Gather()  # a copy's per-sample callers never wait on this one's batches
        return state

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if "solution_strs" in kwargs:
            return self.score_batch(
                kwargs.pop("data_sources", None),
                kwargs.pop("solution_strs"),
                kwargs.pop("ground_truths", None),
                kwargs.pop("extra_infos", None),
            )
        sample = dict(zip(_SAMPLE_ARGS, args, strict=False))
        sample.update({k: v for k, v in kwargs.items() if k in _SAMPLE_ARGS})
        if "solution_str" not in sample:
            raise TypeError("compute_score needs solution_str (or solution_strs=[...] for the batch manager)")
        return self._samples.submit(sample, self._score_samples)

    def score_batch(
        self,
        data_sources: Sequence[Any] | None,
        solution_strs: Sequence[Any],
        ground_truths: Sequence[Any] | None,
        extra_infos: Sequence[Any] | None = None,
    ) -> list[dict[str, Any]]:
        del data_sources
        n = len(solution_strs)
        truths = column_values(ground_truths, n, "ground_truths")
        extras = [e if isinstance(e, Mapping) else {} for e in column_values(extra_infos, n, "extra_infos")]

        def column(name: str, fallback: list[Any] | None = None) -> list[Any]:
            return [e.get(name) or (fallback[i] if fallback else None) for i, e in enumerate(extras)]

        statements = column(self.statement_column, [t if isinstance(t, str) and t.strip() else None for t in truths])
        infos = self.score(
            list(solution_strs),
            formal_statement=statements,
            header=column(self.header_column),
            theorem_name=column(self.name_column),
        )
        return [{"score": i.reward, "verdict": i.verdict, "reason": i.reason} for i in infos]

    def _score_samples(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.score_batch(
            [s.get("data_source") for s in samples],
            [s["solution_str"] for s in samples],
            [s.get("ground_truth") for s in samples],
            [s.get("extra_info") for s in samples],
        )
