"""Whether the pool can serve, and why not: pre-warming's progress, the start-up probe of the
configured REPL, and a problem (the REPL cannot start, a pre-warm header fails) that is retried in
the background with backoff until a start succeeds. Readiness is what the health check reports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import structlog

from kimina_grpc.repl import Repl, ReplSpec, protocol, split_header
from kimina_grpc.supervisor.jobs import PoolKey
from kimina_grpc.supervisor.policy import spare_plan
from kimina_grpc.supervisor.workers import Worker, WorkerState

log = structlog.get_logger("kimina_grpc.supervisor")

# While the pool cannot start REPLs, a start is tried again after this long (doubling to the max).
_PROBE_PERIOD = 1.0
_PROBE_MAX = 30.0


class Readiness:
    """The pool's readiness. `retry(key, places)` asks the pool to start a REPL for `key` again
    (the background retry of a problem: `places` 0), or one for each of `places` places of
    pre-warming (on recovery); `closing()` says the pool is shutting down."""

    def __init__(self, *, retry: Callable[[PoolKey, int], None], closing: Callable[[], bool]) -> None:
        self._retry = retry
        self._closing = closing
        self.probing = False
        """The start-up probe (see `probe`) runs."""
        self.warmup: list[Worker] = []
        """The REPLs pre-warming waits for (`enlist`), up to `warmup_total`."""
        self.warmup_total = 0
        self._headers: set[PoolKey] = set()
        self._vacant: list[PoolKey] = []
        """Headers of pre-warm working REPLs that went before they were warm: the next REPL of the
        header to start takes the place (`enlist`)."""
        self.problem: str | None = None
        self._problem_key: PoolKey | None = None
        self._delay = _PROBE_PERIOD
        self._timer: asyncio.TimerHandle | None = None

    @property
    def ready(self) -> bool:
        """Pre-warming is done and nothing keeps the pool from serving."""
        return self.problem is None and not self.probing and self.warmed_up

    @property
    def warmed_up(self) -> bool:
        """Every REPL pre-warming waits for has imported its header."""
        return len(self.warmup) == self.warmup_total and all(map(_warm, self.warmup))

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

    def plan(self, init_repls: Mapping[str, int], max_repls: int, spare_repls: int) -> list[PoolKey]:
        """The pre-warm starts (LEAN_SERVER_INIT_REPLS, within MAX_REPLS). Pre-warming waits for
        them and for the spares the plan gives their headers: the server is ready once those are
        warm too (a kill or recycle right after it is served warm)."""
        starts = [PoolKey(split_header(h).header) for h, n in init_repls.items() for _ in range(n)][:max_repls]
        spares = spare_plan(spare_repls, {k: starts.count(k) for k in starts}, {}, {})[0]
        self.warmup_total = len(starts) + len(spares)
        self._headers = set(starts)
        return starts

    def waits_for(self, key: PoolKey) -> bool:
        """Pre-warming is not done and `key` is one of its headers (its spares import alongside
        its working REPLs: the operator named the header, and the server is ready sooner)."""
        return key in self._headers and not self.warmed_up

    def warmup_progress(self) -> tuple[int, int]:
        """(REPLs of pre-warming that are warm, how many it waits for)."""
        return sum(map(_warm, self.warmup)), self.warmup_total

    def enlist(self, worker: Worker, *, planned: bool) -> None:
        """A REPL starts: it takes the place of a pre-warm working REPL of its header that went
        before it was warm, if there is one (a spare may: one took that REPL's place, and this is
        its successor); else a `planned` one (pre-warm, spare, a replacement or a retry) takes a
        place of pre-warming not taken yet."""
        if worker.key in self._vacant:
            self._vacant.remove(worker.key)
            self.warmup.append(worker)
        elif planned and len(self.warmup) + len(self._vacant) < self.warmup_total:
            self.warmup.append(worker)

    def vacancies(self, key: PoolKey) -> int:
        """Places of pre-warming that wait for a REPL of `key` to start (`went_cold`)."""
        return self._vacant.count(key)

    def went_cold(self, worker: Worker) -> None:
        """A REPL went before it was warm (its import failed, Lean rejected its header). Of
        pre-warming's: a working one's place waits for the next REPL of its header (a REPL that
        went is not a REPL ready); a spare's is given up (a standby lost, not capacity)."""
        if worker not in self.warmup or _warm(worker):
            return
        self.warmup.remove(worker)
        if worker.spare:
            self.warmup_total -= 1
        else:
            self._vacant.append(worker.key)

    def spares_held_back(self) -> None:
        """Memory (LEAN_SERVER_MIN_FREE_MEMORY) keeps the pre-warm spares not started yet from
        starting: once the REPLs started are warm, pre-warming no longer waits for those (it could
        wait for good; a spare is a standby, not capacity, and starts when memory is back)."""
        if all(map(_warm, self.warmup)):
            self.warmup_total = len(self.warmup) + len(self._vacant)

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
                # A problem of no header in particular is tried with a pre-warm header that went.
                self._retry(self._problem_key or next(iter(self._vacant), PoolKey("")), 0)
                self._delay = min(_PROBE_MAX, self._delay * 2)
                self.set_problem(self._problem_key, self.problem)

            self._timer = asyncio.get_running_loop().call_later(self._delay, again)

    def started(self, key: PoolKey) -> None:
        """A REPL of `key` imported: the problem it was waiting for is gone."""
        if self._problem_key == key or (self.problem is not None and self._problem_key is None):
            log.info("pool_recovered", problem=self.problem)
            self.problem = self._problem_key = None
            self._delay = _PROBE_PERIOD
            for vacant in dict.fromkeys(self._vacant):  # no retry starts them any more
                self._retry(vacant, self._vacant.count(vacant))

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


def _warm(worker: Worker) -> bool:
    """It imported its header (it may have gone since, or be busy)."""
    return worker.warm_since > 0 or worker.state in (WorkerState.IDLE, WorkerState.BUSY)


async def _first_command_fails(spec: ReplSpec, import_timeout: float) -> str:
    repl = await Repl.start(spec, "probe")
    try:
        reply, _ = await asyncio.wait_for(repl.run(protocol.command(""), measure=False), import_timeout)
    finally:
        await repl.kill()
    return "" if reply.error is None and reply.env is not None else f"the REPL answered with {reply.error!r}"
