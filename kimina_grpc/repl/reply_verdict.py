"""The verdict a reply gives: what became of a proof, decided from the REPL's reply alone (the enum
itself is kimina_grpc/verdict.py; TIMEOUT and OUT_OF_MEMORY are decided by whoever kills the REPL)."""

from __future__ import annotations

from kimina_grpc.repl.protocol import Reply, Severity
from kimina_grpc.verdict import Verdict

__all__ = ["Verdict", "verdict_of"]


# Older Lean quotes with '…', newer with `…`.
SORRY_WARNINGS = ("declaration uses 'sorry'", "declaration uses `sorry`")


def verdict_of(reply: Reply) -> Verdict:
    """The verdict of a command's reply. TIMEOUT and OUT_OF_MEMORY are decided by whoever kills the
    process, never from a reply."""
    if reply.error is not None:
        return Verdict.REPL_ERROR
    if any(m.severity is Severity.ERROR for m in reply.messages):
        return Verdict.INVALID
    if reply.sorries or any(
        m.severity is Severity.WARNING and m.data.startswith(SORRY_WARNINGS) for m in reply.messages
    ):
        return Verdict.SORRY
    return Verdict.VALID
