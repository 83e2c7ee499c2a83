"""The pool of REPLs: how many, how warm, how long each lives and how much memory it may take
(kimina_grpc/supervisor/)."""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import Field, field_validator, model_validator

from kimina_grpc.settings.base import Group, OptionalSize


def _default_max_repls() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


class ReplPoolSettings(Group):
    """The pool."""

    max_repls: int = Field(default_factory=_default_max_repls, ge=1, json_schema_extra={"shown": "CPUs − 1 (≥ 1)"})
    """REPL processes at most."""
    spare_repls: int = Field(0, ge=0)
    """Warm REPLs beyond `MAX_REPLS`, kept imported for the headers in use (most working REPLs first), that
    replace a REPL killed (timeout, memory), crashed or recycled at once instead of after an import; the
    spare's own successor imports in the background. Each costs its header's resident memory (5–8 GB for
    Mathlib) and no CPU, and counts toward the memory limits and pre-warming (with `INIT_REPLS` the server is
    ready once the spares of those headers are warm too, held back by `MIN_FREE_MEMORY`, or failed importing);
    spares never run proofs beyond `MAX_REPLS`. A spare whose import fails (the OOM killer, the import timeout) is a
    standby lost: its header's proofs wait for the working REPLs, and the header's next spare starts after
    1 s, doubling per failure in a row up to 30 s, until an import of that header succeeds. Past pre-warming, a
    header gets spares only once one of its working REPLs has imported it (a header whose imports fail is not
    imported twice per failure)."""
    max_repl_uses: int = Field(500, ge=0)
    """Recycle a REPL after this many proofs (`0` = never; the REPL never frees environments, so a REPL
    never recycled eventually dies of memory on an unrelated proof)."""
    max_repl_uses_jitter: int | None = Field(None, ge=0, json_schema_extra={"shown": "MAX_REPL_USES / 10"})
    """Each REPL is recycled after `MAX_REPL_USES` less a random number of proofs in [0, this], drawn when it
    starts (gunicorn's `max_requests_jitter`): REPLs started together (pre-warm) are then recycled one at a
    time, not all at once, so the warm spares (`SPARE_REPLS`) keep up and the pool never has many REPLs
    importing together. A REPL lives `JITTER / 2` proofs less on average. `0`: every REPL after exactly
    `MAX_REPL_USES`. Below `MAX_REPL_USES`."""
    max_repl_mem: OptionalSize = 12 << 30
    """Address-space cap per REPL (`RLIMIT_AS`, via util-linux `prlimit`), e.g. `12G`; `0` = none."""
    max_repl_rss: OptionalSize = None
    """Resident-memory watchdog over the REPL's whole process tree, walked afresh every 0.25 s (so processes
    a proof starts count), e.g. `8G`: a proof past it is killed (`OUT_OF_MEMORY`); a REPL past it after a
    proof is recycled. Unset or `0`: off. Session REPLs are watched too: a tactic past it is `ERROR` (out of
    memory) and the REPL's other sessions move; a session REPL past 3/4 of it is recycled, its sessions
    moved ([sessions](sessions.md#memory))."""
    init_repls: dict[str, int] = Field(default_factory=dict, json_schema_extra={"shown": "{}"})
    """Pre-warm, JSON header → count, e.g. `{"import Mathlib": 3}`."""
    max_concurrent_imports: int = Field(2, ge=1)
    """Imports at once (they stall the disk)."""
    max_wait: float = Field(0, ge=0, json_schema_extra={"shown": "0 (no limit)"})
    """Seconds a proof may wait for a REPL before it is answered `NOT_CHECKED` (`0` = no limit but the
    caller's deadline)."""
    min_free_memory: OptionalSize = None
    """Don't start a REPL while the machine has less available memory (e.g. `6G`); wait."""
    import_cost_hint: float = Field(15.0, gt=0)
    """Seconds an import is expected to take until one is measured (scheduling)."""

    @field_validator("max_repl_uses", mode="before")
    @classmethod
    def _kimina_no_limit(cls, value: Any) -> Any:
        """Kimina's "no limit" is -1 (ours is 0): a Kimina .env keeps working."""
        return 0 if str(value).strip() == "-1" else value

    @field_validator("max_repls", mode="before")
    @classmethod
    def _kimina_default_repls(cls, value: Any) -> Any:
        """Empty means the default, as in Kimina's .env (`LEAN_SERVER_MAX_REPLS=`)."""
        return _default_max_repls() if value == "" else value

    @field_validator("init_repls", mode="before")
    @classmethod
    def _init_repls(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if not isinstance(value, dict) or not all(isinstance(v, int) and v >= 0 for v in value.values()):
            raise ValueError('expected a JSON map of header to count, e.g. {"import Mathlib": 2}')
        return value

    @field_validator("max_repl_uses_jitter", mode="before")
    @classmethod
    def _empty_jitter_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_jitter(self) -> ReplPoolSettings:
        if self.max_repl_uses and (self.max_repl_uses_jitter or 0) >= self.max_repl_uses:
            raise ValueError("LEAN_SERVER_MAX_REPL_USES_JITTER must be below LEAN_SERVER_MAX_REPL_USES")
        return self

    def repl_uses_jitter(self) -> int:
        """MAX_REPL_USES_JITTER, or by default a tenth of MAX_REPL_USES."""
        return self.max_repl_uses // 10 if self.max_repl_uses_jitter is None else self.max_repl_uses_jitter
