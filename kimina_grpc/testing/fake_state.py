"""The stand-in REPL's state: what one process holds across requests, and what one command's
elaboration has gathered so far (shared by the passes that elaborate it)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from kimina_grpc.testing.fake_env import Env
from kimina_grpc.testing.fake_process import Memory
from kimina_grpc.testing.fake_tactics import TacticMode
from kimina_grpc.testing.fake_versions import LeanVersion


@dataclass
class ReplProcess:
    """One REPL process: its recorded environments, its proof states (shared with tactic mode), the
    memory it holds, the import cost (KIMINA_FAKE_IMPORT_*) and code a proof left running in it."""

    version: LeanVersion = field(default_factory=LeanVersion.from_environment)
    envs: list[Env] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)
    tactics: TacticMode = field(init=False)
    import_seconds: float = field(default_factory=lambda: float(os.environ.get("KIMINA_FAKE_IMPORT_SECONDS", "0")))
    import_mb: int = field(default_factory=lambda: int(float(os.environ.get("KIMINA_FAKE_IMPORT_MB", "0"))))
    poison: tuple[str, str] | None = None
    """In-process code a proof left behind (`poison`): this process lies from then on."""

    def __post_init__(self) -> None:
        self.tactics = TacticMode(self.memory)

    def proof_state(self, goal: str) -> int:
        """The id of the next proof state (every sorry records one; the REPL numbers them from 0)."""
        return self.tactics.record(goal)

    def pay_import(self) -> None:
        if self.import_mb:
            self.memory.hold(self.import_mb)
        time.sleep(self.import_seconds)


@dataclass
class Elaboration:
    """One command being elaborated into `new` (from a copy of its base environment)."""

    new: Env
    lines: list[str]
    first: int
    """The file line of the command's first line (after a header: its body's)."""
    options: dict[str, str]
    """The options in force, `... in` ones included."""
    poison: tuple[str, str] | None
    """What the process was left lying about before this command."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    sorries: list[dict[str, Any]] = field(default_factory=list)
    infotree: Any = None
    active: int = 0
    """How many lines are elaborated (up to an `#exit`)."""
    # What directives say about this command's declarations.
    axioms_of: dict[str, frozenset[str]] = field(default_factory=dict)
    uses_sorry: bool = False
    kernel_reject: bool = False
    heartbeats: int = 0
