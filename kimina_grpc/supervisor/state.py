"""What the pool knows of itself: its running totals (`Totals`), the costs it measures (`Mean`),
and its state at a glance (`PoolState`, what GetServerInfo and the metrics read)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass

from kimina_grpc.supervisor.queue import JobQueue
from kimina_grpc.supervisor.workers import Worker, WorkerState, working_counts

# GetServerInfo's view is bounded: headers are caller-chosen text.
_STATE_HEADERS = 100
_STATE_HEADER_CHARS = 200


@dataclass(slots=True)
class Totals:
    """How often each thing happened to the pool since it started (GetServerInfo's counters, the
    kimina_repl_* metrics)."""

    imports: int = 0
    """Header commands a new REPL answered (accepted or not)."""
    recycles: int = 0
    """REPLs retired to be replaced (use limit, memory, header change)."""
    kills: int = 0
    """REPLs the server killed during a proof (timeout, memory watchdog, caller gone)."""
    crashes: int = 0
    """REPLs that died by themselves (or were stopped, or failed to start)."""
    completed: int = 0
    """Jobs answered."""
    warm_swaps: int = 0
    """REPLs replaced (killed, crashed, recycled, converted) by a warm spare: no import waited on."""
    cold_swaps: int = 0
    """REPLs replaced by a new process that had to import first, or by a spare still importing."""


class Mean:
    """A running mean that starts from a guess (proof costs are heavy-tailed: no EMA)."""

    def __init__(self, initial: float) -> None:
        self.value = initial
        self.count = 0

    def add(self, x: float) -> None:
        self.count += 1
        self.value = x if self.count == 1 else self.value + (x - self.value) / self.count


@dataclass(frozen=True, slots=True)
class HeaderStats:
    header: str
    warm: int
    busy: int
    starting: int
    queued: int
    spares: int = 0
    """Warm spares ready to take over (one still importing is counted in `starting`)."""


@dataclass(frozen=True, slots=True)
class PoolState:
    ready: bool
    queued: int
    headers: tuple[HeaderStats, ...]
    imports: int
    recycles: int
    kills: int
    crashes: int
    completed: int
    warm_swaps: int = 0
    """REPLs replaced (killed, crashed, recycled, converted) by a warm spare: no import waited on."""
    cold_swaps: int = 0
    """REPLs replaced by a new process that had to import first, or by a spare still importing."""


def pool_state(ready: bool, queue: JobQueue, workers: Collection[Worker], totals: Totals) -> PoolState:
    """The pool at a glance, bounded: at most 100 headers (busiest first), each cut to 200
    characters (headers are caller-chosen text)."""
    counts = working_counts(workers)
    keys = sorted(
        queue.known_keys() | set(counts),
        key=lambda k: (-(counts.get(k, 0) + queue.length(k)), k.header, k.fresh),
    )[:_STATE_HEADERS]
    stats = []
    for key in sorted(keys, key=lambda k: (k.header, k.fresh)):
        ws = [w for w in workers if w.key == key]
        header = key.header if len(key.header) <= _STATE_HEADER_CHARS else key.header[:_STATE_HEADER_CHARS] + "…"
        stats.append(
            HeaderStats(
                header=header + (" (fresh)" if key.fresh else ""),
                warm=sum(w.state is WorkerState.IDLE and not w.spare for w in ws),
                busy=sum(w.state is WorkerState.BUSY for w in ws),
                starting=sum(w.state is WorkerState.STARTING for w in ws),
                queued=queue.length(key),
                # Ready to take over; a spare still importing counts as starting.
                spares=sum(w.state is WorkerState.IDLE and w.spare for w in ws),
            )
        )
    return PoolState(ready, queue.count, tuple(stats), **asdict(totals))
