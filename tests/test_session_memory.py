"""Session REPLs under the resident-memory watchdog (LEAN_SERVER_MAX_REPL_RSS, as the pool's), and the
driver's typed "the request never reached the REPL" that the crash path reads."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from kimina_grpc.repl import Repl, ReplCrashed
from kimina_grpc.repl.protocol import command
from kimina_grpc.sessions.memory import RECYCLE_FRACTION, MemoryBudget, Size
from kimina_grpc.v1 import verifier_pb2 as pb

from .helpers import eventually
from .helpers.repl import SPEC, started
from .helpers.server import running
from .helpers.sessions import SPLIT, Raw, session_repls

BUDGET = 250 << 20


def test_the_budget_blames_a_jump_and_recycles_growth() -> None:
    budget = MemoryBudget(1000)
    assert budget.judge(1001, floor=100) is Size.OVER
    assert budget.judge(int(1000 * RECYCLE_FRACTION) + 1, floor=100) is Size.RECYCLE
    assert budget.judge(int(1000 * RECYCLE_FRACTION) - 1, floor=100) is Size.FINE
    # Already that large once its sessions were replayed onto it: a move would not help.
    assert budget.judge(900, floor=800) is Size.FINE
    assert MemoryBudget(None).judge(1 << 50, floor=0) is Size.FINE


async def test_a_tactic_past_the_rss_budget_is_an_error_and_the_rest_is_restored() -> None:
    async with running(session_repls=1, max_repl_rss=BUDGET) as (app, ch):
        a, b = Raw(ch), Raw(ch)
        (ra,) = (await a.open()).states
        (rb,) = (await b.open()).states
        sb = await b.run(rb.state, SPLIT)
        before = session_repls(app)
        big = await a.run(ra.state, "skip\n-- fake: alloc 400")
        assert big.status == pb.TACTIC_STATUS_ERROR and big.state == 0
        assert "out of memory" in big.error and str(BUDGET) in big.error
        room = app.servicer.sessions
        assert room.totals.out_of_memory == 1
        # b's states live on, same ids and goals, on a fresh REPL; the big state was never recorded.
        again = await b.run(sb.state, "skip", rid="again")
        assert again.status == pb.TACTIC_STATUS_INCOMPLETE and list(again.goals) == list(sb.goals)
        assert room.totals.restores >= 2
        assert [p.pid for p in session_repls(app)] != [p.pid for p in before]
        assert all(p.memory_info().rss <= BUDGET for p in session_repls(app))
        go_on = await a.run(ra.state, SPLIT, rid="go_on")
        assert go_on.status == pb.TACTIC_STATUS_INCOMPLETE
        await a.close()
        await b.close()


async def test_a_repl_grown_over_many_states_is_recycled_with_its_sessions(tmp_path: Path) -> None:
    async with running(session_repls=1, max_repl_rss=BUDGET) as (app, ch):
        s = Raw(ch)
        (root,) = (await s.open()).states
        first = [p.pid for p in session_repls(app)]
        room = app.servicer.sessions
        states = [root.state]
        k = 0
        while room.totals.restores == 0:  # 40 MiB a tactic: past 3/4 of the budget in a few
            assert k < 12, "never recycled"
            step = await s.run(states[-1], f"skip\n-- fake: alloc-once 40 {tmp_path / str(k)}", rid=f"k{k}")
            assert step.status == pb.TACTIC_STATUS_INCOMPLETE  # growth is no tactic's fault
            states.append(step.state)
            k += 1
        await eventually(lambda: [p.pid for p in session_repls(app)] not in ([], first), what="a fresh REPL")
        assert room.totals.out_of_memory == 0
        for st in states:  # every state, old and new, answers on the fresh REPL
            step = await s.run(st, SPLIT, rid=f"e{st}")
            assert step.status == pb.TACTIC_STATUS_INCOMPLETE
        assert all(p.memory_info().rss <= BUDGET * RECYCLE_FRACTION for p in session_repls(app))
        await s.close()


async def test_200_sessions_on_4_repls_within_the_memory_bound() -> None:
    async with running(session_repls=4, sessions_per_repl=50, sessions_max=200, max_repl_rss=BUDGET) as (app, ch):
        room = app.servicer.sessions
        assert room.limits.max_repl_rss == BUDGET
        calls = [Raw(ch) for _ in range(200)]
        opened = await asyncio.gather(*(c.open() for c in calls))
        steps = await asyncio.gather(*(c.run(o.states[0].state, SPLIT) for c, o in zip(calls, opened, strict=True)))
        assert all(r.status == pb.TACTIC_STATUS_INCOMPLETE for r in steps)
        repls = session_repls(app)
        assert len(repls) == 4
        assert all(p.memory_info().rss <= BUDGET for p in repls)
        assert room.totals.out_of_memory == 0 and room.totals.restores == 0
        await asyncio.gather(*(c.close() for c in calls))


async def test_a_request_to_an_already_dead_repl_is_marked_unsent() -> None:
    repl = await started(SPEC)
    os.kill(repl.pid, signal.SIGKILL)
    await repl.wait()
    with pytest.raises(ReplCrashed) as info:
        await repl.request(b'{"cmd": "", "env": 0}\n\n')
    assert info.value.unsent and info.value.returncode is None
    await repl.kill()


async def test_a_crash_on_the_request_is_not_unsent() -> None:
    repl: Repl = await started(SPEC)
    with pytest.raises(ReplCrashed) as info:
        await repl.run(command("theorem a : True := by\n  -- fake: crash 3\n  trivial", env=0))
    assert not info.value.unsent and info.value.returncode == 3
    await repl.kill()
