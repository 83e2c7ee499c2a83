"""What stops the proof log from starting."""

from __future__ import annotations


class ProofLogError(RuntimeError):
    """The proof log cannot start (bad URL, wrong password, unreachable database, old schema). The
    message is one line naming the variable to fix, never the password."""
