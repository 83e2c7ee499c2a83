"""LeanReward: the reward's configuration (extraction, dataset columns, the reward table, verify
options) and one group's scoring, on the pure parts (`extract`, `table`) and the client's mechanics
(`checker`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kimina_grpc.client._sync import KiminaClient
from kimina_grpc.client._types import Proof
from kimina_grpc.rewards.checker import RETRY_ATTEMPTS, GroupChecker, RewardServerError
from kimina_grpc.rewards.extract import Extract, Unparsable, extract_lean
from kimina_grpc.rewards.table import DEFAULT_REWARDS, RewardInfo, RewardTable


def column_values(values: Any, n: int, name: str) -> list[Any]:
    """A dataset column as TRL passes it (one value per completion), or one value for all."""
    if values is None or isinstance(values, str):
        return [values] * n
    column: list[Any] = list(values)
    if len(column) != n:
        raise ValueError(f"{name} has {len(column)} values for {n} completions")
    return column


class LeanReward:
    """Scores completions by checking their Lean code on a kimina-grpc server; see the module doc.

    `rewards` maps verdict names to rewards (missing verdicts: 0.0); `infra_reward` is the reward of
    a completion the REPL or the server failed (REPL_ERROR, NOT_CHECKED) unless `rewards` names the
    verdict: None tells TRL "no reward" (it logs NaN and leaves the completion out) instead of
    punishing the model for the infrastructure. `verify_options` go to `verify_stream` (timeout,
    infotree, reuse, trust, ...); with `trust` ("audit", "judge") each proof carries its formal
    statement and theorem name. `max_attempts` bounds the stream's reconnects (the default rides out
    about 60 s of outage). The client is made on first use, so the object can be built before a
    trainer forks or pickles it.
    """

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        api_key: str | None = None,
        extract: Extract = "last_block",
        rewards: Mapping[str, float] | None = None,
        unparsable_reward: float = 0.0,
        statement_column: str = "formal_statement",
        header_column: str = "header",
        name_column: str = "theorem_name",
        require_statement: bool = True,
        infra_reward: float | None = 0.0,
        timeout: float = 60.0,
        window: int = 64,
        max_attempts: int = RETRY_ATTEMPTS,
        name: str = "lean_reward",
        **verify_options: Any,
    ) -> None:
        if extract not in ("auto", "last_block", "statement"):
            raise ValueError(f"extract must be 'auto', 'last_block' or 'statement', not {extract!r}")
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.table = RewardTable(dict(DEFAULT_REWARDS if rewards is None else rewards), unparsable_reward, infra_reward)
        # target, api_key, max_attempts and verify_options are the checker's, read when it checks.
        self._checker = GroupChecker(
            target, api_key, max_attempts, {"timeout": timeout, "window": window, **verify_options}
        )
        self.extract: Extract = extract
        self.statement_column = statement_column
        self.header_column = header_column
        self.name_column = name_column
        self.require_statement = require_statement
        self.__name__ = name  # TRL logs each reward function under its __name__
        self.last_infos: list[RewardInfo] = []

    @property
    def target(self) -> str:
        return self._checker.target

    @target.setter
    def target(self, value: str) -> None:
        self._checker.target = value

    @property
    def api_key(self) -> str | None:
        return self._checker.api_key

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        self._checker.api_key = value

    @property
    def max_attempts(self) -> int:
        return self._checker.max_attempts

    @max_attempts.setter
    def max_attempts(self, value: int) -> None:
        self._checker.max_attempts = value

    @property
    def verify_options(self) -> dict[str, Any]:
        return self._checker.verify_options

    @verify_options.setter
    def verify_options(self, value: dict[str, Any]) -> None:
        self._checker.verify_options = value

    @property
    def client(self) -> KiminaClient:
        """This process's client: a fork pool's worker makes its own and never touches the parent's."""
        return self._checker.client

    def close(self) -> None:
        self._checker.close()

    def __getstate__(self) -> dict[str, Any]:
        # A copy (copy.copy too, as before the split) is a reward of its own: its client, made on use.
        state = dict(self.__dict__)
        state["_checker"] = self._checker.fresh()
        return state

    def score(
        self,
        completions: Sequence[Any],
        *,
        formal_statement: Any = None,
        header: Any = None,
        theorem_name: Any = None,
    ) -> list[RewardInfo]:
        """One RewardInfo per completion, in order; the group is checked in one streamed call."""
        if isinstance(completions, str):
            completions = [completions]  # one completion, not one per character
        n = len(completions)
        statements = column_values(formal_statement, n, self.statement_column)
        headers = column_values(header, n, self.header_column)
        names = column_values(theorem_name, n, self.name_column)
        infos: list[RewardInfo | None] = [None] * n
        proofs: list[Proof] = []
        for i, completion in enumerate(completions):
            try:
                code = extract_lean(
                    completion,
                    extract=self.extract,
                    formal_statement=statements[i],
                    header=headers[i],
                    theorem_name=names[i],
                    require_statement=self.require_statement,
                )
            except Unparsable as exc:
                infos[i] = self.table.unparsable(str(exc))
                continue
            if self.verify_options.get("trust") is None:
                proofs.append(Proof(str(i), code))
            else:  # what the trust levels audit the proof against
                proofs.append(Proof(str(i), code, statements[i], names[i]))
        codes = {p.id: p.code for p in proofs}
        for result in self._checker.check(proofs):
            infos[int(result.id)] = self.table.info(result, codes[result.id])
        self.last_infos = [info for info in infos if info is not None]
        if len(self.last_infos) != n:
            raise RewardServerError(
                f"kimina-grpc at {self.target} left {n - len(self.last_infos)} completions unanswered"
            )
        return self.last_infos

    def __call__(
        self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] | None = None, **kwargs: Any
    ) -> list[float | None]:
        """TRL's reward function convention: `(prompts, completions, **dataset columns)` -> rewards."""
        if completions is None:
            raise TypeError("a reward function is called with completions=[...]")
        infos = self.score(
            completions,
            formal_statement=kwargs.get(self.statement_column),
            header=kwargs.get(self.header_column),
            theorem_name=kwargs.get(self.name_column),
        )
        return [info.reward for info in infos]
