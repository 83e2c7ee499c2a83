"""What became of a proof. One enum for the server's rooms and the client (same names and numbers as
the contract's Verdict, without its prefix); it depends on nothing so the client can import it."""

from __future__ import annotations

from enum import Enum


class Verdict(Enum):
    UNSPECIFIED = 0
    """Never sent by the server; what an unknown value from a newer server reads as."""
    VALID = 1
    INVALID = 2
    SORRY = 3
    TIMEOUT = 4
    OUT_OF_MEMORY = 5
    REPL_ERROR = 6
    NOT_CHECKED = 7
    UNTRUSTED = 8
    """Lean accepted the proof but the trust policy (audit or judge) rejected it; `reason` says why."""
