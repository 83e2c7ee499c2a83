"""A tactic's own `sorry`s (`have h : p := by sorry`) are states of the session: they survive a move
of the session, and a path through one is refused by `finish` with the reason."""

from __future__ import annotations

import signal

from kimina_grpc.v1 import verifier_pb2 as pb

from .helpers import eventually
from .helpers.server import running
from .helpers.sessions import EXACT_P, SPLIT, Raw, session_repls


async def test_a_tactics_sorry_is_a_state_that_survives_a_move_and_is_not_finished() -> None:
    async with running() as (app, ch):
        s = Raw(ch)
        (root,) = (await s.open()).states
        split = await s.run(root.state, SPLIT)
        skipped = await s.run(split.state, "sorry", rid="sorry")  # the stand-in's `sorry` tactic
        assert skipped.status == pb.TACTIC_STATUS_INCOMPLETE and list(skipped.goals) == [split.goals[1]]
        (inner,) = skipped.sorries
        assert inner.goal == split.goals[0] and inner.state not in (0, skipped.state)
        on_inner = await s.run(inner.state, EXACT_P, rid="p")
        assert on_inner.status == pb.TACTIC_STATUS_PROOF_COMPLETE
        (victim,) = session_repls(app)
        victim.send_signal(signal.SIGKILL)
        room = app.servicer.sessions
        await eventually(lambda: room.totals.restores >= 1 and session_repls(app), what="the session moved")
        again = await s.run(inner.state, EXACT_P, rid="again")  # its state was replayed with its tactic's
        assert again.status == pb.TACTIC_STATUS_PROOF_COMPLETE
        assert list((await s.run(inner.state, "skip", rid="skip")).goals) == [inner.goal]
        finished = await s.finish(on_inner.state)
        assert finished.result.verdict == pb.VERDICT_NOT_CHECKED and "inside a tactic" in finished.result.error
        assert not finished.proof
        await s.close()
