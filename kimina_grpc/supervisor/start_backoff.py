"""The backoff of a header's new REPLs after their imports failed while the header needs no new
REPL to be served (its spares; its working REPLs while one of them is warm): how many failed in a
row, until when no such REPL of the header starts (`policy.spare_retry_delay` decides how long), and the timer
that runs the scheduler again when that time comes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from kimina_grpc.supervisor.jobs import PoolKey
from kimina_grpc.supervisor.policy import spare_retry_delay


class StartBackoff:
    """`kick()` runs the scheduler (it places the spares) once a header's backoff is over."""

    def __init__(self, kick: Callable[[], None]) -> None:
        self._kick = kick
        self._failures: dict[PoolKey, int] = {}
        self._until: dict[PoolKey, float] = {}
        self._timers: dict[PoolKey, asyncio.TimerHandle] = {}

    def held(self, key: PoolKey) -> bool:
        """An import of `key` failed lately: no spare (nor, while a REPL of it is warm, working REPL)
        starts for it before its backoff is over."""
        return time.monotonic() < self._until.get(key, 0.0)

    def failed(self, key: PoolKey) -> None:
        """A new REPL of `key` did not import: the next one waits longer for each failure in a row."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = spare_retry_delay(failures)
        self._until[key] = time.monotonic() + delay
        self._cancel(key)
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._kick)

    def succeeded(self, key: PoolKey) -> None:
        """An import of `key` worked (or the header is forgotten): its spares start at once again."""
        self._failures.pop(key, None)
        self._until.pop(key, None)
        self._cancel(key)

    def _cancel(self, key: PoolKey) -> None:
        if (timer := self._timers.pop(key, None)) is not None:
            timer.cancel()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
