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

import re
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

from kimina_grpc.client._errors import KiminaError
from kimina_grpc.client._process import PerProcess
from kimina_grpc.client._sync import KiminaClient
from kimina_grpc.client._types import Proof, Result
from kimina_grpc.verdict import Verdict

Extract = Literal["auto", "last_block", "statement"]

DEFAULT_REWARDS: Mapping[str, float] = {"VALID": 1.0}
"""Reward per verdict name; a verdict not in the table scores 0.0 (REPL_ERROR and NOT_CHECKED:
`infra_reward`). E.g. {"VALID": 1.0, "SORRY": 0.1} to shape; UNTRUSTED is the trust levels' verdict."""
UNPARSABLE = "UNPARSABLE"
"""The verdict recorded for a completion with no Lean code to check (it is never sent)."""
INFRA_VERDICTS = frozenset({"REPL_ERROR", "NOT_CHECKED"})
"""Verdicts that say nothing about the completion (the REPL or the server failed it)."""
RETRY_ATTEMPTS = 11
"""Stream attempts before RewardServerError: about 60 s of backoff, a pod restart and a Mathlib import."""

# An info string may follow the language (```lean4 title="x"); the fence line ends the match.
_FENCE = r"```[ \t]*lean4?(?![\w-])[^\n`]*\n"
_BLOCK = re.compile(_FENCE + r"(.*?)```", re.S | re.I)
_OPEN_BLOCK = re.compile(_FENCE, re.I)
_IMPORT = re.compile(r"^\s*import\s", re.M)
_SPACE = re.compile(r"\s+")
_BLOCK_COMMENT = re.compile(r"/-(?:(?!/-|-/).)*-/", re.S)  # innermost first: Lean's comments nest
_LINE_COMMENT = re.compile(r"--[^\n]*")
_DECLARATION = re.compile(r"\b(?:theorem|lemma)\b")


class Unparsable(ValueError):
    """A completion holds no Lean code to check; the message says why."""


class RewardServerError(RuntimeError):
    """The server could not check a group even after the client's bounded retries."""


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


def completion_text(completion: Any) -> str:
    """A completion as text: a string, or TRL's conversational form (a list of messages, the last
    assistant message's content counts; content may be a string or a list of text parts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, Sequence) and completion and all(isinstance(m, Mapping) for m in completion):
        said = [m for m in completion if m.get("role", "assistant") == "assistant"]
        content = (said or list(completion))[-1].get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, Sequence):
            parts = [p.get("text", "") if isinstance(p, Mapping) else p for p in content]
            if all(isinstance(p, str) for p in parts):
                return "".join(parts)
    raise Unparsable(f"completion is neither text nor chat messages ({type(completion).__name__})")


def _plain(code: str) -> str:
    """Code without comments and doc comments, `lemma` read as `theorem`, whitespace collapsed:
    what the textual statement guard compares."""
    while True:
        stripped = _BLOCK_COMMENT.sub(" ", code)
        if stripped == code:
            break
        code = stripped
    code = _LINE_COMMENT.sub(" ", code)
    return _SPACE.sub(" ", _DECLARATION.sub("theorem", code)).strip()


def _statement_head(statement: str) -> str:
    """The statement's declaration, from its `theorem`/`lemma` to its `:=` (imports, `open` lines,
    comments and the proof, `:= by sorry`, left out), as `_plain` writes it."""
    plain = _plain(statement)
    found = _DECLARATION.search(plain)
    head = plain[found.start() :] if found else plain
    return head.rsplit(":=", 1)[0].strip() if ":=" in head else head


def _answer(text: str) -> str:
    """The completion without its reasoning: up to the last `</think>` (the opening tag may be in the
    prompt, as chat templates put it), and from an unclosed `<think>` to the end."""
    return text.rpartition("</think>")[2].split("<think>", 1)[0]


def _last_block(text: str) -> str | None:
    """The last closed ```lean block; None when there is none. Raises Unparsable when the answer ends
    in an unclosed fence: it was cut off, and an earlier block is only a draft."""
    blocks = list(_BLOCK.finditer(text))
    if _OPEN_BLOCK.search(text, blocks[-1].end() if blocks else 0):
        raise Unparsable("the ```lean4 block is not closed (a truncated completion?)")
    return str(blocks[-1].group(1)) if blocks else None


def extract_lean(
    completion: Any,
    *,
    extract: Extract = "last_block",
    formal_statement: str | None = None,
    header: str | None = None,
    theorem_name: str | None = None,
    require_statement: bool = True,
) -> str:
    """The Lean code to check for one completion; raises Unparsable with the reason."""
    full = completion_text(completion)
    text = _answer(full)
    block = _last_block(text) if extract != "statement" else None
    if block is not None:
        code = block
    elif extract == "last_block":
        where = "after the reasoning (<think>)" if "think>" in full else "in the completion"
        raise Unparsable(f"no ```lean4 or ```lean block {where}")
    elif formal_statement:
        statement = re.sub(r"\bsorry\s*$", "", formal_statement.rstrip())
        code = statement + text.split("```", 1)[0]
    elif extract == "statement":
        raise Unparsable("extract='statement' needs the formal statement (dataset column)")
    else:
        raise Unparsable("no ```lean4 block and no formal statement to complete")
    if not code.strip():
        raise Unparsable("the Lean code is empty")
    if header and not _IMPORT.search(code):
        code = header.rstrip("\n") + "\n\n" + code
    if formal_statement and require_statement:
        head = _statement_head(formal_statement)
        if head and head not in _plain(code):
            raise Unparsable("the code does not contain the formal statement unchanged")
    if theorem_name and not re.search(rf"\b(theorem|lemma)\s+{re.escape(theorem_name)}(?![\w.'])", code):
        raise Unparsable(f"no theorem named {theorem_name}")
    return code


def _column(values: Any, n: int, name: str) -> list[Any]:
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
        unknown = set(rewards or {}) - {v.name for v in Verdict}
        if unknown:
            raise ValueError(f"rewards names unknown verdicts: {sorted(unknown)}")
        self.target = target
        self.api_key = api_key
        self.extract: Extract = extract
        self.rewards = dict(DEFAULT_REWARDS if rewards is None else rewards)
        self.unparsable_reward = unparsable_reward
        self.statement_column = statement_column
        self.header_column = header_column
        self.name_column = name_column
        self.require_statement = require_statement
        self.infra_reward = infra_reward
        self.max_attempts = max_attempts
        self.verify_options = {"timeout": timeout, "window": window, **verify_options}
        self.__name__ = name  # TRL logs each reward function under its __name__
        self.last_infos: list[RewardInfo] = []
        self._clients = PerProcess(self._new_client)

    def _new_client(self) -> KiminaClient:
        return KiminaClient(self.target, self.api_key, max_attempts=self.max_attempts)

    @property
    def client(self) -> KiminaClient:
        """This process's client: a fork pool's worker makes its own and never touches the parent's."""
        return self._clients.get()

    def close(self) -> None:
        client = self._clients.pop()
        if client is not None:
            client.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_clients"]  # a client (its loop thread, its channel) does not cross processes
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._clients = PerProcess(self._new_client)

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
        statements = _column(formal_statement, n, self.statement_column)
        headers = _column(header, n, self.header_column)
        names = _column(theorem_name, n, self.name_column)
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
                infos[i] = RewardInfo(self.unparsable_reward, UNPARSABLE, str(exc), None, None)
                continue
            if self.verify_options.get("trust") is None:
                proofs.append(Proof(str(i), code))
            else:  # what the trust levels audit the proof against
                proofs.append(Proof(str(i), code, statements[i], names[i]))
        codes = {p.id: p.code for p in proofs}
        for result in self._check(proofs):
            infos[int(result.id)] = RewardInfo(
                self._reward(result), result.verdict.name, _reason(result), codes[result.id], result
            )
        self.last_infos = [info for info in infos if info is not None]
        if len(self.last_infos) != n:
            raise RewardServerError(
                f"kimina-grpc at {self.target} left {n - len(self.last_infos)} completions unanswered"
            )
        return self.last_infos

    def _reward(self, result: Result) -> float | None:
        verdict = result.verdict.name
        if verdict in self.rewards:
            return self.rewards[verdict]
        if verdict == "NOT_CHECKED" and _refused_code(result.error):
            return self.unparsable_reward  # the completion's own fault (too long for the server)
        return self.infra_reward if verdict in INFRA_VERDICTS else 0.0

    def _check(self, proofs: list[Proof]) -> list[Result]:
        if not proofs:
            return []
        try:
            results = list(self.client.verify_stream(proofs, **self.verify_options))
        except KiminaError as exc:
            tries = f"{exc.attempts} attempt{'s' if exc.attempts != 1 else ''}"
            raise RewardServerError(
                f"kimina-grpc at {self.target} could not check {len(proofs)} completions "
                f"({tries}): {str(exc).splitlines()[0]}"
            ) from exc
        refused = next((r.error for r in results if r.error.startswith("invalid: ") and not _refused_code(r.error)), "")
        if refused:
            # Every completion would score the same 0 for a mistake in how the reward is set up.
            raise ValueError(
                f"kimina-grpc at {self.target} refused the request (check the reward's options): {refused}"
            )
        return results

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
        self._batches = PerProcess(_Batch)  # a fork child does not wait on its parent's callers

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        del state["_batches"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._batches = PerProcess(_Batch)

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
        return self._score_one(sample)

    def score_batch(
        self,
        data_sources: Sequence[Any] | None,
        solution_strs: Sequence[Any],
        ground_truths: Sequence[Any] | None,
        extra_infos: Sequence[Any] | None = None,
    ) -> list[dict[str, Any]]:
        del data_sources
        n = len(solution_strs)
        truths = _column(ground_truths, n, "ground_truths")
        extras = [e if isinstance(e, Mapping) else {} for e in _column(extra_infos, n, "extra_infos")]

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

    def _score_one(self, sample: dict[str, Any]) -> dict[str, Any]:
        done: Future[dict[str, Any]] = Future()
        state = self._batches.get()
        with state.lock:
            state.pending.append((sample, done))
            lead = not state.flushing
            state.flushing = True
        if lead:
            # The first caller checks what is pending, then what arrived meanwhile, until nothing is left.
            while True:
                with state.lock:
                    batch, state.pending = state.pending, []
                    if not batch:
                        state.flushing = False
                        break
                self._flush(batch)
        return done.result()

    def _flush(self, batch: list[tuple[dict[str, Any], Future[dict[str, Any]]]]) -> None:
        try:
            scores = self.score_batch(
                [s.get("data_source") for s, _ in batch],
                [s["solution_str"] for s, _ in batch],
                [s.get("ground_truth") for s, _ in batch],
                [s.get("extra_info") for s, _ in batch],
            )
        except BaseException as exc:
            for _, done in batch:
                done.set_exception(exc)
            return
        for (_, done), score in zip(batch, scores, strict=True):
            done.set_result(score)


class _Batch:
    """Per-sample calls waiting for the next check, and whether a caller is checking (per process)."""

    def __init__(self) -> None:
        self.pending: list[tuple[dict[str, Any], Future[dict[str, Any]]]] = []
        self.lock = threading.Lock()
        self.flushing = False


def trl_reward(target: str = "localhost:50051", **options: Any) -> LeanReward:
    """A reward function for TRL's GRPOTrainer (`reward_funcs=[trl_reward(target=...)]`); `options`
    as LeanReward's (extract, rewards, columns, timeout, ...). Details of the last call:
    `.last_infos`."""
    return LeanReward(target, **options)


def verl_reward(target: str = "localhost:50051", **options: Any) -> VerlReward:
    """verl's `compute_score` (batched or per sample, see VerlReward); `options` as LeanReward's."""
    return VerlReward(target, **options)
