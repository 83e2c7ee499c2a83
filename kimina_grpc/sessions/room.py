"""The sessions' REPLs: warm per import header, each shared by up to `per_repl` sessions pinned to it
(a proof state lives in one process). A REPL that dies (a tactic's timeout or crash, an outside
kill) or has recorded too many proof states (a recycle: the REPL keeps every state it made) hands
its sessions to a fresh one, which replays each session's tree; the client's state ids stay.

The room starts its REPLs with the pool's command, box and limits (`ReplSpec`) but keeps them
apart from the pool: a session holds its REPL for minutes, so lending pool REPLs would starve
Verify; `max_repls` bounds the room on its own. `finish` hands the assembled proof to the checker
(the cache layer in front of the pool), so it is checked like any Verify.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from kimina_grpc.repl import ReplCrashed, ReplSpec, Split, split_header
from kimina_grpc.sessions.home import (
    BROKEN,
    UNREADABLE,
    OpenFailed,
    Session,
    SessionRepl,
    import_header,
    open_on,
    replay,
    send_tactic,
)
from kimina_grpc.sessions.memory import MemoryBudget, Size, watch
from kimina_grpc.sessions.tree import Node, Status, TacticOutcome, assemble, record
from kimina_grpc.supervisor.jobs import CheckOptions, Outcome

log = structlog.get_logger("kimina_grpc.sessions")

Check = Callable[[Split, CheckOptions], Awaitable[Outcome]]


class SessionsFull(Exception):
    """No room for another session (the contract's RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_sessions: int = 256
    per_repl: int = 64
    max_repls: int = 4
    max_states_per_repl: int = 100_000
    """Proof states a REPL may record before its sessions move to a fresh one (a recycle)."""
    import_timeout: float = 1800.0
    max_repl_rss: int | None = None
    """Resident bytes a session REPL may hold (the pool's LEAN_SERVER_MAX_REPL_RSS; see memory.py)."""


@dataclass(slots=True)
class SessionTotals:
    """How often each thing happened to the sessions since the server started (GetServerInfo's
    `sessions`, the kimina_session_* metrics)."""

    opened: int = 0
    """Sessions opened."""
    tactics: int = 0
    """Tactics answered in sessions."""
    restores: int = 0
    """Sessions moved to a fresh REPL by replaying their states (death or recycle)."""
    restored_states: int = 0
    """States replayed by those moves."""
    timeouts: int = 0
    """Session tactics that ran past their timeout (their REPL killed)."""
    out_of_memory: int = 0
    """Session tactics that took their REPL past LEAN_SERVER_MAX_REPL_RSS (killed)."""


class SessionRoom:
    def __init__(self, spec: ReplSpec, limits: SessionLimits, check: Check) -> None:
        self.spec, self.limits, self.check = spec, limits, check
        self.memory = MemoryBudget(limits.max_repl_rss or None)
        self.repls: set[SessionRepl] = set()
        self.sessions: set[Session] = set()
        self._ids = itertools.count(1)
        self._admit = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False
        self.totals = SessionTotals()

    # ------------------------------------------------------------------ sessions

    async def open(self, split: Split, code: str, options: CheckOptions) -> Session:
        """A new session on a REPL of the header (its roots in `tree`, Lean's messages about the
        code in `messages`)."""
        async with self._admit:
            if len(self.sessions) >= self.limits.max_sessions:
                raise SessionsFull(f"the server has {len(self.sessions)} sessions open (its bound)")
            home = self._room_for(split.header) or await self._start(split.header)
            session = Session(f"s{next(self._ids)}", split, code, options, home=home)
            home.sessions.add(session)
            self.sessions.add(session)
        task = asyncio.ensure_future(self._first_open(home, session))  # see `run`: never cut short
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            await asyncio.shield(task)
        except BaseException:
            self.close(session)
            raise
        session.moved.set()
        self.totals.opened += 1
        return session

    async def _first_open(self, home: SessionRepl, session: Session) -> None:
        async with home.lock:
            if home.dead:
                raise OpenFailed("the REPL died as the session opened; open it again")
            try:
                await open_on(home, session)
            except BROKEN as exc:
                home.sessions.discard(session)  # the others move; this one was never open
                await self._lost(home, f"on a session's code: {exc!r}")
                why = "ran past the timeout" if isinstance(exc, TimeoutError) else f"broke the REPL: {exc}"
                raise OpenFailed(f"the code {why}") from None

    def close(self, session: Session) -> None:
        self.sessions.discard(session)
        home = session.home
        if home is not None:
            home.sessions.discard(session)

    async def run(self, session: Session, state: int, tactic: str) -> TacticOutcome:
        """Run `tactic` on the session's `state`. A caller that goes away (its call cancelled) does
        not cut the exchange with the REPL short: a reply left unread would be the next request's."""
        task = asyncio.ensure_future(self._run(session, state, tactic))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _run(self, session: Session, state: int, tactic: str) -> TacticOutcome:
        node = session.tree.nodes.get(state)
        if node is None:
            return TacticOutcome(Status.ERROR, error=f"unknown state {state}")
        while True:
            await session.moved.wait()
            if session.broken:
                return TacticOutcome(Status.ERROR, error=session.broken)
            home = session.home
            assert home is not None
            async with home.lock:
                if home.dead or home is not session.home:
                    continue
                outcome = await self._tactic(home, session, node, tactic)
            if outcome is not None:
                self.totals.tactics += 1
                if home.dead:
                    return outcome
                if home.states > self.limits.max_states_per_repl:
                    await self._move(home, "recycle")
                elif home.repl is not None and self.memory.of(home.repl, home.rss_floor) is Size.RECYCLE:
                    await self._move(home, "memory")
                return outcome

    async def finish(self, session: Session, state: int) -> tuple[Outcome, str]:
        """The path to `state` as a whole proof, checked like Verify at the session's trust level."""
        path = session.tree.path(state)
        start, end, _ = session.tree.roots[path[0].root]
        proof = assemble(session.code, start, end, [n.tactic for n in path[1:]])
        return await self.check(split_header(proof), session.options), proof

    # ------------------------------------------------------------------ mechanics

    async def _tactic(self, home: SessionRepl, session: Session, node: Node, tactic: str) -> TacticOutcome | None:
        """Run `tactic` on `node` (home's lock held). None: the REPL had died before; run it again."""
        assert home.repl is not None
        started = time.perf_counter()
        repl = home.repl
        over: list[bool] = []

        def stop() -> None:  # the REPL cannot be interrupted: killing it ends the pending read at once
            over.append(True)
            self._spawn(repl.kill())

        sampler = asyncio.ensure_future(watch(repl, self.memory, stop))
        try:
            reply = await send_tactic(repl, node.repl_state, tactic, session.options.timeout)
            if not over and self.memory.of(repl, home.rss_floor) is Size.OVER:
                over.append(True)
        except TimeoutError:
            self.totals.timeouts += 1
            await self._lost(home, "a tactic timed out")
            return TacticOutcome(Status.TIMEOUT, error=f"the tactic ran past {session.options.timeout:g} s")
        except ReplCrashed as exc:
            if over:  # the watchdog killed it
                return await self._out_of_memory(home)
            await self._lost(home, str(exc))
            return None if exc.unsent else TacticOutcome(Status.ERROR, error=f"the REPL crashed on the tactic: {exc}")
        except UNREADABLE as exc:
            await self._lost(home, str(exc))
            return TacticOutcome(Status.ERROR, error=f"the REPL's reply could not be read: {exc}")
        finally:
            sampler.cancel()
        if over:  # this tactic took the REPL past the budget: its state is not kept
            return await self._out_of_memory(home)
        seconds = time.perf_counter() - started
        outcome = record(session.tree, node, tactic, reply, seconds)
        home.states = max([home.states, *(s + 1 for s in outcome.repl_states)])
        return outcome

    async def _out_of_memory(self, home: SessionRepl) -> TacticOutcome:
        self.totals.out_of_memory += 1
        await self._lost(home, "its resident memory passed the budget")
        return TacticOutcome(Status.ERROR, error=self.memory.error())

    def _room_for(self, header: str) -> SessionRepl | None:
        fits = [r for r in self.repls if r.header == header and not r.dead and len(r.sessions) < self.limits.per_repl]
        return min(fits, key=lambda r: len(r.sessions), default=None)

    async def _start(self, header: str, *, replacing: bool = False) -> SessionRepl:
        if self.closed:
            raise SessionsFull("the server is shutting down")
        if not replacing and len(self.repls) >= self.limits.max_repls:
            idle = [r for r in self.repls if not r.sessions]
            if idle:  # a warm REPL no session uses makes room (another header's, usually)
                self._retire(idle[0])
        if not replacing and len(self.repls) >= self.limits.max_repls:
            raise SessionsFull(
                f"every session REPL is full ({self.limits.per_repl} sessions each, {self.limits.max_repls} REPLs)"
            )
        home = SessionRepl(header, f"session-repl-{next(self._ids)}")
        self.repls.add(home)
        try:
            home.rss_floor = self.memory.measure(await import_header(home, self.spec, self.limits.import_timeout))
        except BaseException:
            self.repls.discard(home)
            home.dead = True
            if home.repl is not None:
                await home.repl.kill()
            raise
        self._spawn(self._watch(home))
        return home

    async def _watch(self, home: SessionRepl) -> None:
        """A REPL that dies between tactics (an outside kill) moves its sessions at once."""
        assert home.repl is not None
        await home.repl.wait()
        if not home.dead:
            async with home.lock:
                if not home.dead:
                    await self._lost(home, "the REPL died")

    def _retire(self, home: SessionRepl) -> None:
        home.dead = True
        self.repls.discard(home)
        if home.repl is not None:
            self._spawn(home.repl.kill())

    async def _lost(self, home: SessionRepl, why: str) -> None:
        """`home` died (its lock held): kill what is left of it and move its sessions."""
        home.dead = True
        self.repls.discard(home)
        log.warning("session_repl_lost", repl_id=home.id, reason=why, sessions=len(home.sessions))
        if home.repl is not None:
            await home.repl.kill()
        self._spawn_move(home)

    async def _move(self, home: SessionRepl, why: str) -> None:
        home.dead = True
        self.repls.discard(home)
        log.info("session_repl_recycled", repl_id=home.id, reason=why, states=home.states)
        self._spawn_move(home)

    def _spawn_move(self, home: SessionRepl) -> None:
        sessions = [s for s in home.sessions if s in self.sessions]
        for s in sessions:
            s.moved.clear()
        self._spawn(self._restore(home, sessions))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restore(self, old: SessionRepl, sessions: list[Session]) -> None:
        """Replay every session of `old` on one fresh REPL; the client's ids stay."""
        try:
            if not sessions:
                return
            try:
                new = await self._start(old.header, replacing=True)
            except Exception as exc:
                for s in sessions:
                    s.broken = f"the session could not be restored: {exc}"
                return
            async with new.lock:
                live = [s for s in sessions if s in self.sessions]
                for s in live:
                    s.home = new
                    new.sessions.add(s)
                for s in live:
                    try:
                        await replay(new, s, self._restored_state)
                    except Exception as exc:  # this session is lost, never the others
                        log.warning("session_restore_failed", session=s.id, error=repr(exc))
                        s.broken = f"the session could not be restored: {exc!r}"
                        new.sessions.discard(s)
                        if isinstance(exc, BROKEN):
                            await self._lost(new, "a replay broke it")  # the rest move again
                            return
                    self.totals.restores += 1
                if new.repl is not None:
                    new.rss_floor = self.memory.measure(new.repl)
        finally:
            for s in sessions:
                if s.broken or s.home is None or not s.home.dead:  # else the next move sets it
                    s.moved.set()
            if old.repl is not None:  # a recycled REPL served until its sessions moved
                await old.repl.kill()

    def _restored_state(self) -> None:
        self.totals.restored_states += 1

    async def close_all(self) -> None:
        """Shutdown: no more REPLs; every session ends (its requests answered ERROR)."""
        self.closed = True
        for session in self.sessions:
            session.broken = "the server is shutting down"
            session.moved.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for home in list(self.repls):
            home.dead = True
            if home.repl is not None:
                await home.repl.kill()
        self.repls.clear()
        self.sessions.clear()
