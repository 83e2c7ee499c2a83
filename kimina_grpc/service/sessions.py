"""ProofSession: one bidirectional stream is one session. Validate, hand to the session room,
translate back; requests after `open` run concurrently and are answered as they finish."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from kimina_grpc.cache import CheckCache
from kimina_grpc.repl import Message, Split
from kimina_grpc.service import convert
from kimina_grpc.service.convert import InvalidInput
from kimina_grpc.sessions import SessionLimits, SessionRoom, Status, TacticOutcome
from kimina_grpc.sessions.home import OpenFailed, Session
from kimina_grpc.settings import Settings
from kimina_grpc.supervisor.jobs import CheckOptions, Outcome
from kimina_grpc.supervisor.pool import Supervisor
from kimina_grpc.v1 import verifier_pb2 as pb

_STATUS = {
    Status.INCOMPLETE: pb.TACTIC_STATUS_INCOMPLETE,
    Status.PROOF_COMPLETE: pb.TACTIC_STATUS_PROOF_COMPLETE,
    Status.ERROR: pb.TACTIC_STATUS_ERROR,
    Status.TIMEOUT: pb.TACTIC_STATUS_TIMEOUT,
}
_END = object()


class IdleExpired(Exception):
    """A session had no request in flight for LEAN_SERVER_SESSION_IDLE_SECONDS."""


def make_room(supervisor: Supervisor, checks: CheckCache, settings: Settings) -> SessionRoom:
    async def check(split: Split, options: CheckOptions) -> Outcome:
        (ticket,) = await checks.submit_many([(split, options)])
        try:
            return await ticket.future
        except asyncio.CancelledError:
            checks.cancel(ticket)
            raise

    limits = SessionLimits(
        max_sessions=settings.sessions_max,
        per_repl=settings.sessions_per_repl,
        max_repls=settings.session_repls,
        max_states_per_repl=settings.session_max_states,
        import_timeout=supervisor.settings.import_timeout,
        max_repl_rss=supervisor.settings.max_repl_rss,
    )
    return SessionRoom(supervisor.settings.spec, limits, check)


def sessions_state(room: SessionRoom) -> pb.SessionsState:
    c = room.totals
    return pb.SessionsState(
        open=len(room.sessions),
        max_sessions=room.limits.max_sessions,
        per_repl=room.limits.per_repl,
        repls=len(room.repls),
        max_repls=room.limits.max_repls,
        opened=c.opened,
        tactics=c.tactics,
        restores=c.restores,
        restored_states=c.restored_states,
        timeouts=c.timeouts,
    )


class SessionCollector(Collector):
    """The sessions' metrics: plain integers the event loop writes."""

    def __init__(self, room: SessionRoom) -> None:
        self.room = room

    def collect(self) -> Any:
        yield GaugeMetricFamily(
            "kimina_sessions_open", "Interactive proof sessions open.", value=len(self.room.sessions)
        )
        yield GaugeMetricFamily("kimina_session_repls", "REPLs serving sessions.", value=len(self.room.repls))
        for name, text in (
            ("opened", "Sessions opened."),
            ("tactics", "Tactics answered in sessions (rate: tactics/s)."),
            ("restores", "Sessions moved to a fresh REPL by replaying their states (death or recycle)."),
            ("restored_states", "States replayed by those moves."),
            ("timeouts", "Session tactics that ran past their timeout (their REPL killed)."),
            ("out_of_memory", "Session tactics that took their REPL past LEAN_SERVER_MAX_REPL_RSS (killed)."),
        ):
            yield CounterMetricFamily(f"kimina_session_{name}", text, value=getattr(self.room.totals, name))


def _message(m: Message) -> pb.Message:
    out = pb.Message(
        severity=pb.Severity.Value(f"SEVERITY_{m.severity.name}"),
        start=pb.Position(line=m.pos.line, column=m.pos.column),
        text=m.data,
    )
    if m.end_pos is not None:
        out.end.CopyFrom(pb.Position(line=m.end_pos.line, column=m.end_pos.column))
    return out


def _tactic_result(request_id: str, o: TacticOutcome) -> pb.ProofSessionResponse:
    return pb.ProofSessionResponse(
        tactic=pb.TacticResult(
            request_id=request_id,
            status=_STATUS[o.status],
            state=o.state,
            goals=o.goals,
            messages=[_message(m) for m in o.messages],
            error=o.error,
            time_seconds=o.seconds,
            sorries=[pb.GoalState(state=state, goal=goal) for state, goal in o.sorries],
            traces=o.traces,
        )
    )


def _opened(session: Session) -> pb.ProofSessionResponse:
    states = []
    for node in session.tree.in_order():
        start, end, goal = session.tree.roots[node.root]
        state = pb.GoalState(state=node.id, goal=goal, start=pb.Position(line=start.line, column=start.column))
        if end is not None:
            state.end.CopyFrom(pb.Position(line=end.line, column=end.column))
        states.append(state)
    return pb.ProofSessionResponse(
        opened=pb.SessionOpened(session_id=session.id, states=states, messages=[_message(m) for m in session.messages])
    )


def _check_open(request: pb.ProofSessionRequest, settings: Settings) -> tuple[Split, CheckOptions]:
    if request.WhichOneof("kind") != "open":
        raise InvalidInput([("kind", "the first request of a session must be `open`")])
    proof = pb.Proof(id="session", code=request.open.code, options=request.open.options)
    problems = convert.check_proof(proof, "open", settings)
    if problems:
        raise InvalidInput(problems)
    return convert.to_job(proof, convert.effective(proof.options, None, settings), None)


class SessionCall:
    """One ProofSession call."""

    def __init__(
        self, room: SessionRoom, settings: Settings, result: Callable[[str, Outcome], Awaitable[pb.ProofResult]]
    ) -> None:
        self.room, self.settings, self.result = room, settings, result
        self.out: asyncio.Queue[Any] = asyncio.Queue()
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.last = time.monotonic()

    async def serve(self, requests: AsyncIterator[pb.ProofSessionRequest]) -> AsyncIterator[pb.ProofSessionResponse]:
        it = aiter(requests)
        first = await self._next(it)
        if first is None:
            return
        split, options = _check_open(first, self.settings)
        try:
            session = await self.room.open(split, first.open.code, options)
        except OpenFailed as exc:
            raise InvalidInput([("open.code", str(exc))]) from None
        self.last = time.monotonic()  # the idle clock starts when the session is open
        reader = asyncio.ensure_future(self._read(it, session))
        try:
            yield _opened(session)
            while True:
                item = await self.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                self.last = time.monotonic()
                yield item
        finally:
            reader.cancel()
            for task in self.in_flight.values():
                task.cancel()
            self.room.close(session)

    async def _next(self, it: AsyncIterator[pb.ProofSessionRequest]) -> pb.ProofSessionRequest | None:
        """The next request, or None at the stream's end; IdleExpired when none comes in time while
        nothing is in flight."""
        nxt = asyncio.ensure_future(anext(it))
        try:
            while True:
                left = self.last + self.settings.session_idle_seconds - time.monotonic()
                done, _ = await asyncio.wait({nxt}, timeout=max(0.0, left))
                if done:
                    try:
                        return nxt.result()
                    except StopAsyncIteration:
                        return None
                if not self.in_flight and time.monotonic() - self.last >= self.settings.session_idle_seconds:
                    raise IdleExpired(f"the session was idle for {self.settings.session_idle_seconds:g} s")
                if self.in_flight:
                    self.last = time.monotonic()
        finally:
            nxt.cancel()

    async def _read(self, it: AsyncIterator[pb.ProofSessionRequest], session: Session) -> None:
        try:
            while (request := await self._next(it)) is not None:
                self.last = time.monotonic()
                self._dispatch(request, session)
            while self.in_flight:  # the client closed its side: answer what is in flight, then end
                await asyncio.wait(set(self.in_flight.values()))
            self.out.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.out.put_nowait(exc)

    def _dispatch(self, request: pb.ProofSessionRequest, session: Session) -> None:
        kind = request.WhichOneof("kind")
        if kind == "run":
            rid, size = request.run.request_id, len(request.run.tactic.encode())
        elif kind == "finish":
            rid, size = request.finish.request_id, 0
        else:
            raise InvalidInput([("kind", "after `open`, only `run` and `finish` requests")])
        problems = []
        if not rid or len(rid.encode()) > convert.MAX_ID_BYTES:
            problems.append((f"{kind}.request_id", f"must be non-empty and at most {convert.MAX_ID_BYTES} bytes"))
        elif rid in self.in_flight:
            problems.append((f"{kind}.request_id", f"{rid!r} is already in flight"))
        if size > self.settings.max_code_bytes:
            problems.append(("run.tactic", f"must be at most {self.settings.max_code_bytes} bytes"))
        if problems:
            raise InvalidInput(problems)
        coro = self._run(rid, request.run, session) if kind == "run" else self._finish(rid, request.finish, session)
        task = asyncio.ensure_future(self._answering(coro))
        self.in_flight[rid] = task
        task.add_done_callback(lambda _: self.in_flight.pop(rid, None))

    async def _answering(self, work: Awaitable[None]) -> None:
        """A request's work; a failure of the server's own ends the call (INTERNAL), never a lost answer."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.out.put_nowait(exc)

    async def _run(self, rid: str, run: pb.TacticRequest, session: Session) -> None:
        outcome = await self.room.run(session, run.state, run.tactic)
        self.out.put_nowait(_tactic_result(rid, outcome))

    async def _finish(self, rid: str, finish: pb.FinishRequest, session: Session) -> None:
        why = f"unknown state {finish.state}" if finish.state not in session.tree.nodes else ""
        if why or (why := session.tree.unfinishable(finish.state)):
            result = convert.not_checked(rid, why)
            self.out.put_nowait(pb.ProofSessionResponse(finished=pb.FinishResult(request_id=rid, result=result)))
            return
        outcome, proof = await self.room.finish(session, finish.state)
        response = pb.FinishResult(request_id=rid, result=await self.result(rid, outcome), proof=proof)
        self.out.put_nowait(pb.ProofSessionResponse(finished=response))
