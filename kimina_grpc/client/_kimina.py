"""kimina-client's API on ours: its names, argument orders and result helpers, so that a script
written for kimina-client runs with its import line and target changed (docs/migrating-from-kimina.md, "Coming from
Kimina"). Nothing here decides a verdict: it renames the server's.

What stays different: `r.error` is "" rather than None when there is none, `r.diagnostics` is our
Diagnostics rather than Kimina's dict, and `health()` returns a bool.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

from kimina_grpc.verdict import Verdict

if TYPE_CHECKING:
    from kimina_grpc.client._types import CheckResponse, Message, Proofs, Result, Sorry


DEFAULT_DATASET = "Goedel-LM/Lean-workbook-proofs"
"""Kimina's benchmark dataset, and `kimina-grpc bench`'s."""


class Infotree(StrEnum):
    """Kimina's `infotree=` values (a plain string works too)."""

    full = "full"
    tactics = "tactics"
    original = "original"
    substantive = "substantive"


class SnippetStatus(StrEnum):
    """Kimina's classification of a result (`r.analyze().status`)."""

    valid = "valid"
    sorry = "sorry"
    lean_error = "lean_error"
    repl_error = "repl_error"
    timeout_error = "timeout_error"
    server_error = "server_error"


@dataclass(frozen=True, slots=True)
class SnippetAnalysis:
    status: SnippetStatus
    time: float | None = None


# Our verdicts in Kimina's terms. UNTRUSTED (a trust level rejected what Lean accepted; Kimina has no
# trust levels) counts as a failed proof, not as the server's failure.
STATUS = {
    Verdict.VALID: SnippetStatus.valid,
    Verdict.SORRY: SnippetStatus.sorry,
    Verdict.INVALID: SnippetStatus.lean_error,
    Verdict.UNTRUSTED: SnippetStatus.lean_error,
    Verdict.REPL_ERROR: SnippetStatus.repl_error,
    Verdict.TIMEOUT: SnippetStatus.timeout_error,
}
_NO_RESPONSE = (Verdict.TIMEOUT, Verdict.OUT_OF_MEMORY, Verdict.NOT_CHECKED, Verdict.UNSPECIFIED)
"""Where Kimina's server set `error` and no `response`."""


def _pos(line: int | None, column: int | None) -> dict[str, int] | None:
    return None if line is None or column is None else {"line": line, "column": column}


def _message(m: Message) -> dict[str, Any]:
    return {
        "severity": m.severity,
        "pos": _pos(m.line, m.column),
        "endPos": _pos(m.end_line, m.end_column),
        "data": m.text,
    }


def _sorry(s: Sorry) -> dict[str, Any]:
    return {"pos": _pos(s.line, s.column), "endPos": _pos(s.end_line, s.end_column), "goal": s.goal}


class KiminaResult:
    """`r.response` and `r.analyze()` on our Result."""

    __slots__ = ()
    if TYPE_CHECKING:
        verdict: Verdict
        messages: tuple[Message, ...]
        sorries: tuple[Sorry, ...]
        time: float
        error: str
        infotree: str | None

    @property
    def response(self) -> dict[str, Any] | None:
        """The REPL's reply as Kimina's server passed it on: `{"messages": [{"severity", "pos",
        "endPos", "data"}], "sorries": [...], "infotree": ...}` (keys only when non-empty),
        `{"message": ...}` for a REPL-level error, None when the check failed (then see `error`)."""
        if self.verdict in _NO_RESPONSE:
            return None
        if self.verdict is Verdict.REPL_ERROR:
            return {"message": self.error}
        reply: dict[str, Any] = {}
        if self.messages:
            reply["messages"] = [_message(m) for m in self.messages]
        if self.sorries:
            reply["sorries"] = [_sorry(s) for s in self.sorries]
        if self.infotree is not None:
            reply["infotree"] = json.loads(self.infotree)
        return reply

    def analyze(self) -> SnippetAnalysis:
        """Kimina's status of this result (decided from our verdict, see STATUS)."""
        status = STATUS.get(self.verdict, SnippetStatus.server_error)
        timed = status not in (SnippetStatus.timeout_error, SnippetStatus.server_error)
        return SnippetAnalysis(status, self.time if timed else None)


class KiminaCheckResponse:
    """`CheckResponse.merge` and `.analyze(elapsed)`."""

    __slots__ = ()
    if TYPE_CHECKING:
        results: list[Result]

        def __init__(self, results: list[Result]) -> None: ...

    @classmethod
    def merge(cls, responses: Iterable[CheckResponse]) -> Self:
        return cls([r for response in responses for r in response.results])

    def analyze(self, elapsed: float) -> None:
        """Print Kimina's benchmark summary: the count of each status, Lean's time and the wall time."""
        analyses = [r.analyze() for r in self.results]
        times = [a.time for a in analyses if a.time is not None]
        counts = {s.value: sum(a.status is s for a in analyses) for s in SnippetStatus}
        print(f"{len(analyses)} snippets: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
        mean = sum(times) / len(times) if times else 0.0
        print(f"Lean time: total {sum(times):.2f} s, {mean:.2f} s/snippet; elapsed {elapsed:.2f} s")


class KiminaSnippet:
    """`Snippet.from_code`, `.from_snip` and `.model_dump()` (Kimina's Snippet is a pydantic model)."""

    __slots__ = ()
    if TYPE_CHECKING:
        id: str
        code: str

        def __init__(self, id: str, code: str) -> None: ...

    @classmethod
    def from_code(cls, code: str) -> Self:
        return cls(id=uuid.uuid4().hex, code=code)

    @classmethod
    def from_snip(cls, snip: str | Self) -> Self:
        return cls.from_code(snip) if isinstance(snip, str) else snip

    def model_dump(self) -> dict[str, str]:
        return {"id": self.id, "code": self.code}


def client_options(
    api_key: str | None, headers: Mapping[str, str] | None, n_retries: int | None
) -> tuple[str | None, int | None]:
    """Kimina's constructor keywords in our terms: (api key, attempts). An `Authorization: Bearer`
    or `X-API-Key` header is the key, as our server reads it; other HTTP headers mean nothing to a
    gRPC server and are dropped; `n_retries` is Kimina's number of attempts. Kimina's
    `http_timeout` bounded one HTTP request; here per-proof timeouts bound the work, so it is
    dropped too."""
    for name, value in (headers or {}).items():
        if api_key is None and name.lower() == "authorization" and value.lower().startswith("bearer "):
            api_key = value[len("bearer ") :].strip()
        elif api_key is None and name.lower() == "x-api-key":
            api_key = value.strip()
    return api_key, n_retries


class Streams(Protocol):
    """What run_bench needs of a client: a blocking verify_stream."""

    def verify_stream(self, proofs: Proofs, **kw: Any) -> Iterator[Result]: ...


def run_benchmark(  # noqa: PLR0917  (Kimina's positional order)
    client: Streams,
    dataset_name: str = DEFAULT_DATASET,
    split: str | None = None,
    n: int = 100,
    batch_size: int = 8,
    max_workers: int = 5,
    timeout: int = 60,
    reuse: bool = True,
    show_progress: bool = True,
    output: str | Path = "bench-report",
) -> dict[str, Any]:
    """Kimina's `run_benchmark` on `kimina-grpc bench` (the bench extra), for both clients: a hub
    dataset (`split`, default train) or a local .jsonl/.json/.parquet/.csv file; `batch_size` x
    `max_workers` proofs in flight, as with Kimina; prints the summary, writes report.json,
    results.jsonl and report.png under `output`, returns the report."""
    from kimina_grpc import extras

    extras.require("bench", "run_benchmark")
    from kimina_grpc.client.commands import run_bench

    return run_bench(
        client,
        dataset=dataset_name,
        split=split,
        n=n,
        timeout=timeout,
        window=max(1, batch_size * max_workers),
        reuse=reuse,
        progress=show_progress,
        output=Path(output),
    )
