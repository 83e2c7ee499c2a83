"""A budget too short for a check never costs a warm REPL (issue 24, item 9).

`timeout_seconds=0.001` used to kill the warm REPL of every such proof (23 requests, 23 kills, 24
imports), and so did a caller's deadline that was nearly over. Now a timeout below
LEAN_SERVER_MIN_TIMEOUT is refused (INVALID_ARGUMENT, or the stream item's NOT_CHECKED), and a proof
whose deadline leaves less than it is answered NOT_CHECKED (a statement about the call, not the
proof: a reward leaves it out) without a REPL. The pool's counters (GetServerInfo) show no kill and
no import.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from kimina_grpc.repl import Verdict, split_header
from kimina_grpc.supervisor import CheckOptions
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually
from .helpers.pool import Started, check
from .helpers.server import running, settings

SLOW = "import A\n\ntheorem t : True := by\n  -- fake: sleep 0.5\n  trivial"


async def warm(stub: pb_grpc.VerifierServiceAsyncStub) -> pb.PoolCounters:
    """The pool's counters once its one REPL of `import A` is warm and has checked a proof."""
    quick = pb.Proof(id="warm", code="import A\n\ntheorem w : True := trivial")
    reply = await stub.Verify(pb.VerifyRequest(proofs=[quick], options=pb.ProofOptions(cache=False)))
    assert reply.results[0].verdict == pb.VERDICT_VALID
    info = await stub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.counters.imports == 1 and info.counters.kills == 0
    return info.counters


async def test_a_timeout_below_the_minimum_is_refused_and_kills_nothing() -> None:
    async with running(max_repls=1, init_repls={"import A": 1}) as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        before = await warm(stub)
        tiny = pb.ProofOptions(timeout_seconds=0.001, cache=False)
        for i in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id=f"v{i}", code=SLOW)], options=tiny))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "LEAN_SERVER_MIN_TIMEOUT" in (err.value.details() or "")

        async def items() -> AsyncIterator[pb.StreamVerifyRequest]:
            for i in range(5):
                yield pb.StreamVerifyRequest(proof=pb.Proof(id=f"s{i}", code=SLOW, options=tiny))

        results = [r.result async for r in stub.StreamVerify(items())]
        assert [r.verdict for r in results] == [pb.VERDICT_NOT_CHECKED] * 5
        assert all("LEAN_SERVER_MIN_TIMEOUT" in r.error for r in results)
        # The minimum itself is a timeout like any other.
        at_minimum = pb.ProofOptions(timeout_seconds=0.1, cache=False)
        reply = await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id="m", code=SLOW)], options=at_minimum))
        assert reply.results[0].verdict == pb.VERDICT_TIMEOUT
        after = (await stub.GetServerInfo(pb.GetServerInfoRequest())).counters
        assert (after.kills, after.imports) == (before.kills + 1, before.imports)  # that one only


async def test_a_deadline_that_leaves_less_than_the_minimum_is_answered_without_a_repl() -> None:
    """The caller's deadline leaves about 19.75 s (the server keeps 0.25 s to answer), less than the
    minimum of 30 s: NOT_CHECKED at once, saying why, and the warm REPL neither runs nor dies. (A
    deadline of seconds, not tenths: the answer must beat it on a loaded machine too.)"""
    async with running(max_repls=1, init_repls={"import A": 1}, min_timeout=30.0) as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        before = await warm(stub)
        hang = "import A\n\ntheorem t : True := by\n  -- fake: hang\n  trivial"
        for i in range(5):
            request = pb.VerifyRequest(proofs=[pb.Proof(id=f"d{i}", code=hang)], options=pb.ProofOptions(cache=False))
            reply = await stub.Verify(request, timeout=20)
            [result] = reply.results
            assert result.verdict == pb.VERDICT_NOT_CHECKED
            assert "LEAN_SERVER_MIN_TIMEOUT" in result.error and "deadline" in result.error
        after = (await stub.GetServerInfo(pb.GetServerInfoRequest())).counters
        assert (after.kills, after.imports) == (before.kills, before.imports)
        assert after.completed == before.completed + 5
        # The REPL is the same warm one: the next honest proof needs no import.
        await warm(stub)


async def test_the_pool_answers_a_budget_below_the_minimum_without_sending_anything(started: Started) -> None:
    """The pool's own rule (for library callers that skip the service's validation): a proof whose
    budget is below the minimum when a REPL takes it is answered NOT_CHECKED, the REPL untouched."""
    sup = await started(init_repls={"import A": 1})
    await eventually(lambda: sup.ready, what="the REPL is warm")
    assert (await check(sup, "import A\ntheorem w : True := trivial")).verdict is Verdict.VALID
    before = sup.state()
    job = sup.submit(split_header(SLOW), CheckOptions(timeout=0.001, cache=False))
    out = await asyncio.wait_for(job.future, 10)
    assert out.verdict is Verdict.NOT_CHECKED and "LEAN_SERVER_MIN_TIMEOUT" in out.error
    after = sup.state()
    assert (after.kills, after.imports, after.completed) == (before.kills, before.imports, before.completed + 1)
    assert (await check(sup, "import A\ntheorem u : True := trivial")).verdict is Verdict.VALID
    assert sup.state().imports == before.imports
    # Nor does it make the pool start a REPL: on a REPL of its own (reuse off), of another header,
    # or with a deadline that leaves too little.
    for code, timeout, reuse, deadline_in in [
        (SLOW, 0.05, False, None),
        ("import B\ntheorem t : True := trivial", 0.05, True, None),
        ("import C\ntheorem t : True := trivial", 10.0, True, 0.05),
    ]:
        deadline = None if deadline_in is None else time.monotonic() + deadline_in
        options = CheckOptions(timeout=timeout, reuse=reuse, deadline=deadline)
        out = await asyncio.wait_for(sup.submit(split_header(code), options).future, 10)
        assert out.verdict is Verdict.NOT_CHECKED and "LEAN_SERVER_MIN_TIMEOUT" in out.error
    assert sup.queued == 0 and len(sup.state().headers) == 1
    assert sup.state().imports == before.imports


def test_the_minimum_cannot_exceed_the_default_timeout() -> None:
    with pytest.raises(ValueError, match="LEAN_SERVER_MIN_TIMEOUT"):
        settings(min_timeout=90, default_timeout=60)
