"""LEAN_SERVER_MIN_FREE_MEMORY: a new REPL (working or spare) starts only while the machine has that
much memory available; while it has not, the scheduler is run again every second."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psutil
import structlog

log = structlog.get_logger("kimina_grpc.supervisor")

_RETRY = 1.0


class MemoryGate:
    """`kick()` runs the scheduler (it tries the starts again)."""

    def __init__(self, min_free: int | None, kick: Callable[[], None]) -> None:
        self._need = min_free
        self._kick = kick
        self._timer: asyncio.TimerHandle | None = None

    def ok(self) -> bool:
        """Enough memory is free for a new REPL; when not, the scheduler runs again in a second."""
        if not self._need or psutil.virtual_memory().available >= self._need:
            return True
        if self._timer is None:
            log.warning("memory_low_waiting", available=psutil.virtual_memory().available, needed=self._need)
            self._timer = asyncio.get_running_loop().call_later(_RETRY, self._again)
        return False

    def _again(self) -> None:
        self._timer = None
        self._kick()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
