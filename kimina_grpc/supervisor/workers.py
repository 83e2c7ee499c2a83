"""A worker: one REPL process of the pool, bound to one import header (its PoolKey), and the state
the scheduler reads of it. Their lives are `lifecycle.Lifecycle`'s."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from kimina_grpc.repl import Repl
from kimina_grpc.supervisor.jobs import Job, PoolKey


class WorkerState(Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    GONE = "gone"


@dataclass(eq=False)
class Worker:
    key: PoolKey
    id: str
    state: WorkerState = WorkerState.STARTING
    repl: Repl | None = None
    base_env: int = 0
    uses: int = 0
    max_uses: int = 0
    """Its own use limit (`policy.use_limit`, drawn when it starts): recycled after that many proofs; 0: never."""
    idle_since: float = 0.0
    """When it last became idle (the longest idle is converted first)."""
    job_started: float = 0.0
    """When the check of its current job began (cancel() reads how long it has run)."""
    job: Job | None = None
    stop: Callable[[str], None] | None = None
    """Kills the REPL while it runs `job`, giving the reason (timeout, memory, abandoned)."""
    warm_since: float = 0.0
    """When its header's import was done: its visit to the header began (the switch policy's)."""
    spare: bool = False
    """A warm successor beyond MAX_REPLS: takes no work until it replaces a REPL of its header."""
    returns: PoolKey | None = None
    """For a REPL started for one proof in the place of a pool REPL: the key the pool gets back."""


def working_counts(workers: Iterable[Worker]) -> dict[PoolKey, int]:
    """REPLs per key that count toward MAX_REPLS (all but the spares), in any state."""
    counts: dict[PoolKey, int] = {}
    for w in workers:
        if not w.spare:
            counts[w.key] = counts.get(w.key, 0) + 1
    return counts
