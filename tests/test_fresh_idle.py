"""A REPL started for one `reuse=false` proof never outlives its purpose: when that proof is
cancelled or expires while the REPL imports, the REPL goes and the pool gets its place back."""

from __future__ import annotations

from kimina_grpc.repl import Verdict, split_header
from kimina_grpc.supervisor import CheckOptions, PoolState

from .helpers import eventually
from .helpers.pool import Started, check


def _rows(state: PoolState) -> list[tuple[str, int, int, int]]:
    return [(h.header, h.warm, h.busy, h.starting) for h in state.headers]


async def test_a_cancelled_fresh_proof_gives_the_pool_its_repl_back(started: Started) -> None:
    sup = await started(max_repls=1, init_repls={"import A": 1})
    await eventually(lambda: sup.ready, what="pre-warm")
    job = sup.submit(split_header("import A\ntheorem t := 1"), CheckOptions(timeout=5, reuse=False))
    # Its REPL is on its way (the pool's warm one makes room for it), then the caller goes.
    await eventually(lambda: ("import A (fresh)", 0, 0, 1) in _rows(sup.state()), what="fresh REPL starting")
    sup.cancel(job)
    assert job.future.cancelled()
    # The fresh REPL imports, finds nothing to do, and goes; the header's warm REPL comes back.
    await eventually(lambda: _rows(sup.state()) == [("import A", 1, 0, 0)], what="the header back at full strength")
    assert (await check(sup, "import A\ntheorem u := 1")).verdict is Verdict.VALID


async def test_an_expired_fresh_proof_leaves_no_idle_fresh_repl(started: Started) -> None:
    sup = await started(max_repls=2, max_wait=0.01)
    job = sup.submit(split_header("import A\ntheorem t := 1"), CheckOptions(timeout=5, reuse=False))
    out = await job.future
    assert out.verdict is Verdict.NOT_CHECKED  # expired while its REPL imported
    await eventually(lambda: not sup.state().headers, what="no REPL left")
