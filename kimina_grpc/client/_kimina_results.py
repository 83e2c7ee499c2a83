"""Kimina's result helpers on our result types (`r.response`, `r.analyze()`, `CheckResponse.merge`,
`Snippet.from_code`), as mixins that `_types` builds its classes on. They read the fields of what
they are mixed into, described here by shape, so this module imports nothing of the client's.
Nothing here decides a verdict: it renames the server's."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, Self

from kimina_grpc.verdict import Verdict


class _Span(Protocol):
    @property
    def line(self) -> int | None: ...
    @property
    def column(self) -> int | None: ...
    @property
    def end_line(self) -> int | None: ...
    @property
    def end_column(self) -> int | None: ...


class _Message(_Span, Protocol):
    @property
    def severity(self) -> str: ...
    @property
    def text(self) -> str: ...


class _Sorry(_Span, Protocol):
    @property
    def goal(self) -> str: ...


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


def _message(m: _Message) -> dict[str, Any]:
    return {
        "severity": m.severity,
        "pos": _pos(m.line, m.column),
        "endPos": _pos(m.end_line, m.end_column),
        "data": m.text,
    }


def _sorry(s: _Sorry) -> dict[str, Any]:
    return {"pos": _pos(s.line, s.column), "endPos": _pos(s.end_line, s.end_column), "goal": s.goal}


class KiminaResult:
    """`r.response` and `r.analyze()` on our Result."""

    __slots__ = ()
    if TYPE_CHECKING:
        verdict: Verdict
        messages: tuple[_Message, ...]
        sorries: tuple[_Sorry, ...]
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
        results: Sequence[KiminaResult]

        def __init__(self, results: list[KiminaResult]) -> None: ...

    @classmethod
    def merge(cls, responses: Iterable[KiminaCheckResponse]) -> Self:
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
