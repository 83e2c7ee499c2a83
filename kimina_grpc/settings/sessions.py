"""Interactive proof sessions (kimina_grpc/sessions/, docs/sessions.md): how many, on how many REPLs, for
how long."""

from __future__ import annotations

from pydantic import Field

from kimina_grpc.settings.base import Group


class SessionSettings(Group):
    """Interactive proof sessions (ProofSession; docs/sessions.md)."""

    sessions_max: int = Field(256, ge=0)
    """`ProofSession`s open at most on this server (`0`: off, `ProofSession` is refused); past it
    `RESOURCE_EXHAUSTED`."""
    sessions_per_repl: int = Field(64, gt=0)
    """Sessions pinned to one REPL at most; past it `RESOURCE_EXHAUSTED`."""
    session_repls: int = Field(4, gt=0)
    """REPLs kept for sessions, apart from the pool's `LEAN_SERVER_MAX_REPLS`; past them
    `RESOURCE_EXHAUSTED`."""
    session_idle_seconds: float = Field(600.0, gt=0)
    """A session with nothing in flight that long ends `DEADLINE_EXCEEDED`."""
    session_max_states: int = Field(100_000, gt=0)
    """Proof states a session REPL records before its sessions move to a fresh one (memory)."""
