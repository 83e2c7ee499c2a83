"""Whether the pool can serve, and why not: pre-warming's progress, the start-up probe of the
configured REPL, and a problem (the REPL cannot start, a pre-warm header fails) that is retried in
the background with backoff until a start succeeds. Readiness is what the health check reports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from kimina_grpc.repl import Repl, ReplSpec, protocol
from kimina_grpc.supervisor.jobs import PoolKey
from kimina_grpc.supervisor.workers import Worker, WorkerState

log = structlog.get_logger("kimina_grpc.supervisor")

# While the pool cannot start REPLs, a start is tried again after this long (doubling to the max).
_PROBE_PERIOD = 1.0
_PROBE_MAX = 30.0


class Readiness:
    """The pool's readiness. `retry(key)` asks the pool to start a REPL for `key` again (the
    background retry of a problem); `closing()` says the pool is shutting down."""

    def __init__(self, *, retry: Callable[[PoolKey], None], closing: Callable[[], bool]) -> None:
        self._retry = retry
        self._closing = closing
        self.probing = False
        """The start-up probe (see `probe`) runs."""
        self.warmup: list[Worker] = []
        self.warmup_total = 0
        self.problem: str | None = None
        self._problem_key: PoolKey | None = None
        self._delay = _PROBE_PERIOD
        self._timer: asyncio.TimerHandle | None = None

    @property
    def ready(self) -> bool:
        """Pre-warming is done and nothing keeps the pool from serving."""
        return (
            self.problem is None
            and not self.probing
            and len(self.warmup) == self.warmup_total
            and all(w.state is not WorkerState.STARTING for w in self.warmup)
        )

    @property
    def reason(self) -> str:
        """Why `ready` is False ("" when it is True)."""
        if self.problem is not None:
            return self.problem
        if self.probing:
            return "starting a REPL to see that it works"
        if not self.ready:
            done, total = self.warmup_progress()
            return f"pre-warming: {done} of {total} REPLs ready"
        return ""

    def warmup_progress(self) -> tuple[int, int]:
        done = sum(w.state is not WorkerState.STARTING for w in self.warmup)
        return done, self.warmup_total

    def spares_held_back(self) -> None:
        """Memory (LEAN_SERVER_MIN_FREE_MEMORY) keeps the pre-warm spares not started yet from
        starting: once the REPLs started are warm, pre-warming no longer waits for those (it could
        wait for good; a spare is a standby, not capacity, and starts when memory is back)."""
        if all(w.state is not WorkerState.STARTING for w in self.warmup):
            self.warmup_total = len(self.warmup)

    def set_problem(self, key: PoolKey | None, problem: str) -> None:
        """The pool cannot serve: readiness says why until a start for `key` (any key when None)
        succeeds; a start is tried again in the background, with backoff."""
        if self.problem != problem:
            log.error("pool_not_ready", reason=problem)
        self.problem, self._problem_key = problem, key
        if self._timer is None and not self._closing():

            def again() -> None:
                self._timer = None
                if self.problem is None or self._closing():
                    return
                self._retry(self._problem_key or PoolKey(""))
                self._delay = min(_PROBE_MAX, self._delay * 2)
                self.set_problem(self._problem_key, self.problem)

            self._timer = asyncio.get_running_loop().call_later(self._delay, again)

    def started(self, key: PoolKey) -> None:
        """A REPL of `key` imported: the problem it was waiting for is gone."""
        if self._problem_key == key or (self.problem is not None and self._problem_key is None):
            log.info("pool_recovered", problem=self.problem)
            self.problem = self._problem_key = None
            self._delay = _PROBE_PERIOD

    async def probe(self, spec: ReplSpec, import_timeout: float) -> None:
        """Nothing to pre-warm, but readiness must still know whether the configured REPL starts at
        all: one REPL answers an empty header command, then goes (it takes no slot of the pool's).
        Set `probing` before spawning this."""
        try:
            problem = await _first_command_fails(spec, import_timeout)
        except TimeoutError:
            problem = f"the REPL did not answer its first command within {import_timeout:g} s"
        except Exception as exc:  # ReplCrashed above all; whatever it is, readiness says so
            problem = str(exc) or repr(exc)
        finally:
            self.probing = False
        if problem:
            self.set_problem(None, f"{problem} (command: {' '.join(spec.argv)}; cwd: {spec.cwd})")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


async def _first_command_fails(spec: ReplSpec, import_timeout: float) -> str:
    repl = await Repl.start(spec, "probe")
    try:
        reply, _ = await asyncio.wait_for(repl.run(protocol.command(""), measure=False), import_timeout)
    finally:
        await repl.kill()
    return "" if reply.error is None and reply.env is not None else f"the REPL answered with {reply.error!r}"
