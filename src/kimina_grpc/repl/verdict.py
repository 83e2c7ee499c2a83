"""Verdicts: what became of a proof, decided from the REPL's reply alone."""

from __future__ import annotations

from enum import Enum

from kimina_grpc.repl.protocol import Reply, Severity


class Verdict(Enum):
    """Mirrors the contract's Verdict enum (same names, same numbers)."""

    VALID = 1
    INVALID = 2
    SORRY = 3
    TIMEOUT = 4
    OUT_OF_MEMORY = 5
    REPL_ERROR = 6
    NOT_CHECKED = 7


# Older Lean quotes with '…', newer with `…`.
_SORRY_WARNINGS = ("declaration uses 'sorry'", "declaration uses `sorry`")


def verdict_of(reply: Reply) -> Verdict:
    """The verdict of a command's reply. TIMEOUT and OUT_OF_MEMORY are decided by whoever kills the
    process, never from a reply."""
    if reply.error is not None:
        return Verdict.REPL_ERROR
    if any(m.severity is Severity.ERROR for m in reply.messages):
        return Verdict.INVALID
    if reply.sorries or any(
        m.severity is Severity.WARNING and m.data.startswith(_SORRY_WARNINGS) for m in reply.messages
    ):
        return Verdict.SORRY
    return Verdict.VALID
