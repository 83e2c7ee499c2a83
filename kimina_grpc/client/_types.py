"""The client's typed proofs and results, shared by both clients (the contract's messages become
these in `_wire`; failed calls are `_errors`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from kimina_grpc.client._kimina_results import KiminaCheckResponse, KiminaResult, KiminaSnippet
from kimina_grpc.verdict import Verdict


@dataclass(frozen=True, slots=True)
class Proof:
    id: str
    code: str
    statement: str | None = None
    """The reference statement the proof must prove (trust levels audit and judge)."""
    theorem_name: str | None = None
    """The theorem to audit; default: the one `statement` declares."""
    tags: Mapping[str, str] | None = None
    """Labels kept with the proof's row in the server's proof log (e.g. problem, model, step, sample)."""


@dataclass(frozen=True, slots=True)
class Message:
    severity: str
    line: int
    column: int
    end_line: int | None
    end_column: int | None
    text: str


@dataclass(frozen=True, slots=True)
class Sorry:
    line: int
    column: int
    goal: str
    end_line: int | None = None
    end_column: int | None = None


@dataclass(frozen=True, slots=True)
class Diagnostics:
    repl_id: str
    queue_seconds: float
    check_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int
    attempts: int
    fresh_repl: bool
    from_cache: bool = False
    """No Lean ran: the result is a stored one (the fields above are the original check's)."""
    shared_check: bool = False
    """An identical proof's check, already queued or running, answered this one too."""


@dataclass(frozen=True, slots=True)
class Result(KiminaResult):
    """One proof's result. Kimina's `r.response` and `r.analyze()` work too (see _kimina_results.py)."""

    id: str
    verdict: Verdict
    messages: tuple[Message, ...]
    sorries: tuple[Sorry, ...]
    time: float
    error: str
    infotree: str | None
    diagnostics: Diagnostics | None
    reason: str = ""
    """Why the trust policy rejected the proof (verdict UNTRUSTED)."""
    axioms: dict[str, tuple[str, ...]] | None = None
    """Each audited theorem's axioms (trust levels audit and judge)."""

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.VALID


@dataclass(frozen=True, slots=True)
class CheckResponse(KiminaCheckResponse):
    """What `check` returns: `.results` in input order, as Kimina's `CheckResponse` has them (with
    Kimina's `merge` and `analyze(elapsed)`)."""

    results: list[Result]

    def __iter__(self) -> Iterator[Result]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> Result:
        return self.results[i]


class Snippet(KiminaSnippet, Proof):
    """Kimina's name for a proof: `Snippet(id=..., code=...)`, `Snippet.from_code(code)`."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class AstResult:
    module: str
    ast: str
    error: str
    time: float


def not_checked(pid: str, error: str) -> Result:
    """A result for a proof the server never answered (the call failed)."""
    return Result(pid, Verdict.NOT_CHECKED, (), (), 0.0, error, None, None)
