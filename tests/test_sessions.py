"""ProofSession through the real server (stand-in REPL): states, branching, pipelining, finish."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest

from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually
from .helpers.server import running
from .helpers.sessions import CODE, EXACT_P, EXACT_Q, SPLIT, STATEMENT, Raw, session_repls


async def test_open_run_branch_and_finish() -> None:
    async with running() as (_, ch):
        s = Raw(ch)
        opened = await s.open(trust=pb.TRUST_LEVEL_AUDIT, statement=STATEMENT)
        (root,) = opened.states
        assert root.goal == "p q : Prop\nhp : p\nhq : q\n⊢ p ∧ q"
        assert (root.start.line, root.start.column) == (3, STATEMENT.index("sorry"))
        split = await s.run(root.state, SPLIT)
        assert split.status == pb.TACTIC_STATUS_INCOMPLETE
        assert [g.rpartition("⊢ ")[2] for g in split.goals] == ["p", "q"]
        wrong = await s.run(split.state, EXACT_Q)
        assert wrong.status == pb.TACTIC_STATUS_ERROR and "tactic failed" in wrong.messages[0].text
        # Branch from the older state: the failed attempt did not disturb it.
        left = await s.run(split.state, EXACT_P)
        assert left.status == pb.TACTIC_STATUS_INCOMPLETE and len(left.goals) == 1
        done = await s.run(left.state, EXACT_Q)
        assert done.status == pb.TACTIC_STATUS_PROOF_COMPLETE and not done.goals
        finished = await s.finish(done.state)
        assert finished.result.verdict == pb.VERDICT_VALID, finished.result
        assert "constructor" in finished.proof and "sorry" not in finished.proof.split("by", 1)[1]
        # A path that is not complete is no proof: Lean's "unsolved goals".
        partial = await s.finish(left.state, rid="f2")
        assert partial.result.verdict == pb.VERDICT_INVALID
        assert partial.result.messages[0].text.startswith("unsolved goals")
        await s.close()


async def test_a_step_only_tactic_mode_accepts_is_not_valid() -> None:
    async with running() as (_, ch):
        s = Raw(ch)
        (root,) = (await s.open(trust=pb.TRUST_LEVEL_AUDIT, statement=STATEMENT)).states
        step = await s.run(root.state, "exact ⟨hp, hq⟩\n-- fake: tactic-only\n-- fake: done")
        assert step.status == pb.TACTIC_STATUS_PROOF_COMPLETE
        finished = await s.finish(step.state)
        assert finished.result.verdict == pb.VERDICT_INVALID
        # A newer REPL's own kernel check of a finished proof: an ERROR, not PROOF_COMPLETE.
        kernel = await s.run(root.state, "exact ⟨hp, hq⟩\n-- fake: done\n-- fake: kernel-reject", rid="k")
        assert kernel.status == pb.TACTIC_STATUS_ERROR and not kernel.goals
        await s.close()


async def test_64_pipelined_tactics_answered_by_request_id() -> None:
    async with running() as (_, ch):
        s = Raw(ch)
        (root,) = (await s.open()).states
        for k in range(64):
            s.send_run(f"r{k}", root.state, f"{SPLIT}\n-- fake: sleep 0.0{k % 3}")
        results = [(await s.answer(f"r{k}")).tactic for k in range(64)]
        assert all(r.status == pb.TACTIC_STATUS_INCOMPLETE for r in results)
        assert len({r.state for r in results}) == 64
        await s.close()


async def test_timeout_kills_the_repl_and_the_other_sessions_are_restored_with_their_ids() -> None:
    async with running(session_repls=1) as (_, ch):
        a, b = Raw(ch), Raw(ch)
        (ra,) = (await a.open(timeout_seconds=1)).states
        (rb,) = (await b.open(timeout_seconds=1)).states
        sb = await b.run(rb.state, SPLIT)
        sb2 = await b.run(sb.state, EXACT_P)
        hung = await a.run(ra.state, "skip\n-- fake: hang")
        assert hung.status == pb.TACTIC_STATUS_TIMEOUT and hung.state == 0
        # b's states live on, with the same ids and goals, on a fresh REPL.
        go_on = await b.run(sb2.state, EXACT_Q)
        assert go_on.status == pb.TACTIC_STATUS_PROOF_COMPLETE
        again = await b.run(sb.state, EXACT_P, rid="again")
        assert list(again.goals) == list(sb2.goals)
        # and a's own root too.
        split = await a.run(ra.state, SPLIT)
        assert split.status == pb.TACTIC_STATUS_INCOMPLETE
        await a.close()
        await b.close()


async def test_open_errors_are_clear() -> None:
    async with running() as (_, ch):
        s = Raw(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.open(code="import A\n\ntheorem t : True := by trivial")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sorry" in (err.value.details() or "")


async def test_limits_answer_resource_exhausted() -> None:
    async with running(sessions_max=1) as (_, ch):
        a, b = Raw(ch), Raw(ch)
        await a.open()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await b.open()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await a.close()


async def test_a_repl_killed_from_outside_moves_its_sessions_with_their_ids() -> None:
    async with running() as (app, ch):
        s = Raw(ch)
        (root,) = (await s.open()).states
        split = await s.run(root.state, SPLIT)
        left = await s.run(split.state, EXACT_P, rid="p")
        (victim,) = session_repls(app)
        victim.send_signal(signal.SIGKILL)
        room = app.servicer.sessions
        assert room is not None
        await eventually(lambda: room.totals.restores >= 1 and session_repls(app), what="the session moved")
        assert [p.pid for p in session_repls(app)] != [victim.pid]
        done = await s.run(left.state, EXACT_Q)
        assert done.status == pb.TACTIC_STATUS_PROOF_COMPLETE
        again = await s.run(split.state, EXACT_P, rid="again")  # an older state is there too
        assert list(again.goals) == list(left.goals)
        await s.close()


async def test_an_idle_session_expires_with_deadline_exceeded() -> None:
    async with running(session_idle_seconds=0.5) as (app, ch):
        s = Raw(ch)
        (root,) = (await s.open()).states
        slow = await s.run(root.state, "skip\n-- fake: sleep 1")  # in flight longer than the idle bound
        assert slow.status == pb.TACTIC_STATUS_INCOMPLETE
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.answer("never")
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        room = app.servicer.sessions
        assert room is not None
        await eventually(lambda: not room.sessions, what="the expired session is closed")


async def test_200_sessions_share_4_repls() -> None:
    async with running(session_repls=4, sessions_per_repl=50, sessions_max=200) as (app, ch):
        calls = [Raw(ch) for _ in range(200)]
        opened = await asyncio.gather(*(c.open() for c in calls))
        steps = await asyncio.gather(*(c.run(o.states[0].state, SPLIT) for c, o in zip(calls, opened, strict=True)))
        assert all(r.status == pb.TACTIC_STATUS_INCOMPLETE for r in steps)
        assert len(session_repls(app)) == 4
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await Raw(ch).open()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await asyncio.gather(*(c.close() for c in calls))


async def test_a_repl_past_its_state_budget_is_recycled_and_the_session_moves() -> None:
    async with running(session_max_states=6) as (app, ch):
        s = Raw(ch)
        (root,) = (await s.open()).states
        first = session_repls(app)
        states = [root.state]
        for k in range(8):
            step = await s.run(states[-1], "skip", rid=f"k{k}")
            assert step.status == pb.TACTIC_STATUS_INCOMPLETE
            states.append(step.state)
        await eventually(lambda: app.servicer.sessions.totals.restores >= 1, what="a recycle")
        assert [p.pid for p in session_repls(app)] != [p.pid for p in first]
        for st in states:  # pipelined, while the session moves again and again
            s.send_run(f"e{st}", st, EXACT_Q)
        every = [(await s.answer(f"e{st}")).tactic for st in states]
        assert all(e.status == pb.TACTIC_STATUS_ERROR for e in every)  # each state is still p ∧ q
        await s.close()


async def test_bad_requests_are_answered_and_disturb_nothing() -> None:
    async with running() as (app, ch):
        s = Raw(ch)
        (root,) = (await s.open()).states
        unknown = await s.run(999, "skip")
        assert unknown.status == pb.TACTIC_STATUS_ERROR and "unknown state" in unknown.error
        parse = await s.run(root.state, "exat\n-- fake: parse-error", rid="parse")
        assert parse.status == pb.TACTIC_STATUS_ERROR and parse.state == 0 and "unknown tactic" in parse.error
        finish = await s.finish(999)
        assert finish.result.verdict == pb.VERDICT_NOT_CHECKED
        ok = await s.run(root.state, SPLIT, rid="ok")
        assert ok.status == pb.TACTIC_STATUS_INCOMPLETE
        # Verify traffic goes on beside sessions: the pool is the pool's.
        stub = pb_grpc.VerifierServiceStub(ch)
        verified = await stub.Verify(
            pb.VerifyRequest(proofs=[pb.Proof(id="v", code="import A\n\ntheorem v : True := trivial")])
        )
        assert verified.results[0].verdict == pb.VERDICT_VALID
        info = await stub.GetServerInfo(pb.GetServerInfoRequest())
        assert info.sessions.open == 1 and info.sessions.repls == 1 and info.sessions.tactics >= 2
        # A duplicate request id in flight, or a second `open`, ends the call with INVALID_ARGUMENT.
        s.send_run("dup", root.state, "skip\n-- fake: sleep 0.5")
        s.send_run("dup", root.state, "skip")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.answer("never")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "in flight" in (err.value.details() or "")
        await eventually(lambda: not app.servicer.sessions.sessions, what="the session closed")
        t = Raw(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            t.send_run("x", 1, "skip")
            await t.call.read()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_client_that_leaves_mid_tactic_disturbs_no_other_session() -> None:
    async with running(session_repls=1) as (app, ch):
        a, b = Raw(ch), Raw(ch)
        (ra,) = (await a.open()).states
        (rb,) = (await b.open()).states
        a.send_run("slow", ra.state, "skip\n-- fake: sleep 0.5")
        await eventually(lambda: app.servicer.sessions.totals.tactics == 0 and a.queue.empty(), what="sent")
        a.call.cancel()
        await eventually(lambda: len(app.servicer.sessions.sessions) == 1, what="a's session closed")
        step = await b.run(rb.state, SPLIT)
        assert step.status == pb.TACTIC_STATUS_INCOMPLETE and len(step.goals) == 2  # its own reply, not a's
        left = await b.run(step.state, EXACT_P, rid="p")
        assert left.status == pb.TACTIC_STATUS_INCOMPLETE and len(left.goals) == 1
        assert app.servicer.sessions.totals.restores == 0
        await b.close()


async def test_code_that_times_out_on_open_fails_alone() -> None:
    async with running(session_repls=1) as (_, ch):
        b = Raw(ch)
        (rb,) = (await b.open()).states
        step = await b.run(rb.state, SPLIT)
        a = Raw(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await a.open(code=f"{CODE}\n-- fake: hang", timeout_seconds=0.5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "timeout" in (err.value.details() or "")
        go_on = await b.run(step.state, EXACT_P, rid="p")  # b moved to a fresh REPL with its states
        assert go_on.status == pb.TACTIC_STATUS_INCOMPLETE and len(go_on.goals) == 1
        await b.close()


async def test_a_tactic_that_crashes_its_repl_is_an_error_and_the_rest_is_restored() -> None:
    async with running(session_repls=1) as (app, ch):
        a, b = Raw(ch), Raw(ch)
        (ra,) = (await a.open()).states
        (rb,) = (await b.open()).states
        sb = await b.run(rb.state, SPLIT)
        b.send_run("queued", sb.state, EXACT_P)  # in flight on the same REPL as the crash
        crash = await a.run(ra.state, "skip\n-- fake: crash 3")
        assert crash.status == pb.TACTIC_STATUS_ERROR and crash.state == 0 and "crash" in crash.error
        queued = (await b.answer("queued")).tactic
        assert queued.status == pb.TACTIC_STATUS_INCOMPLETE and len(queued.goals) == 1
        again = await a.run(ra.state, SPLIT, rid="again")
        assert again.status == pb.TACTIC_STATUS_INCOMPLETE
        assert app.servicer.sessions.totals.restores >= 2
        await a.close()
        await b.close()
