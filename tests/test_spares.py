"""Warm spares (LEAN_SERVER_SPARE_REPLS) on stand-in REPLs: a REPL that is killed, crashes or is
recycled is replaced by an already imported one; spares follow the headers in use and never run
proofs beyond MAX_REPLS. The placement rule itself is table-tested in test_policy.py."""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import psutil
import pytest

from kimina_grpc.repl import ReplSpec, Split, Verdict, split_header
from kimina_grpc.service.server import create_app
from kimina_grpc.settings import Settings
from kimina_grpc.supervisor import CheckOptions, Supervisor
from kimina_grpc.testing import fake_repl_command
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually
from .helpers.pool import ARGV, Started, check

# One working REPL (repl-1, pre-warmed) and its spare (repl-2): a replacement that runs on repl-2
# paid no import; a new process would be repl-3.
SPARE = "repl-2"


def spares(sup: Supervisor) -> dict[str, int]:
    return {h.header: h.spares for h in sup.state().headers if h.spares}


async def warm_with_spare(started: Started, **kw: object) -> Supervisor:
    sup = await started(max_repls=1, spare_repls=1, init_repls={"import A": 1}, **kw)
    await eventually(lambda: sup.totals.imports == 2 and spares(sup) == {"import A": 1}, what="spare imported")
    return sup


async def successor_imports(sup: Supervisor) -> None:
    """The promoted spare's own successor imports in the background."""
    await eventually(lambda: sup.totals.imports == 3 and spares(sup) == {"import A": 1}, what="new spare")


async def test_a_timeout_is_replaced_by_the_warm_spare(started: Started) -> None:
    sup = await warm_with_spare(started)
    out = await check(sup, "import A\ntheorem t := by\n  -- fake: hang", timeout=0.3)
    assert out.verdict is Verdict.TIMEOUT and out.repl_id == "repl-1"
    after = await check(sup, "import A\ntheorem ok := 1")
    assert after.verdict is Verdict.VALID and after.repl_id == SPARE
    assert (sup.totals.warm_swaps, sup.totals.cold_swaps) == (1, 0)
    await successor_imports(sup)


async def test_an_oom_kill_is_replaced_by_the_warm_spare(started: Started) -> None:
    sup = await warm_with_spare(started, spec=ReplSpec(argv=ARGV, max_memory_bytes=400 << 20))
    out = await check(sup, "import A\ntheorem t := by\n  -- fake: alloc 600")
    assert out.verdict is Verdict.OUT_OF_MEMORY and out.repl_id == "repl-1" and out.attempts == 1
    after = await check(sup, "import A\ntheorem ok := 1")
    assert after.verdict is Verdict.VALID and after.repl_id == SPARE
    assert (sup.totals.warm_swaps, sup.totals.cold_swaps) == (1, 0)
    await successor_imports(sup)


async def test_a_crash_is_retried_on_the_warm_spare(started: Started, tmp_path: Path) -> None:
    sup = await warm_with_spare(started)
    out = await check(sup, f"import A\ntheorem t := by\n  -- fake: crash-once {tmp_path / 'crashed'}")
    assert out.verdict is Verdict.VALID and out.attempts == 2 and out.repl_id == SPARE
    assert (sup.totals.crashes, sup.totals.warm_swaps, sup.totals.cold_swaps) == (1, 1, 0)
    await successor_imports(sup)


async def test_a_recycled_repl_is_replaced_by_the_warm_spare(started: Started) -> None:
    sup = await warm_with_spare(started, max_repl_uses=1)
    first = await check(sup, "import A\ntheorem t := 1")
    assert first.repl_id == "repl-1"
    await eventually(lambda: sup.totals.recycles == 1, what="recycled")
    assert (sup.totals.warm_swaps, sup.totals.cold_swaps) == (1, 0)
    after = await check(sup, "import A\ntheorem ok := 1")
    assert after.verdict is Verdict.VALID and after.repl_id == SPARE


async def test_spares_follow_a_change_of_header(started: Started) -> None:
    sup = await warm_with_spare(started)
    # B's proof takes A's idle REPL (A has nothing queued): A is no longer in use.
    assert (await check(sup, "import B\ntheorem t := 1")).verdict is Verdict.VALID
    await eventually(lambda: spares(sup) == {"import B": 1}, what="the spare moved to B")
    assert {h.header for h in sup.state().headers} == {"import B"}


async def test_spares_never_run_proofs_beyond_max_repls(started: Started) -> None:
    sup = await started(max_repls=1, spare_repls=2, init_repls={"import A": 1})
    await eventually(lambda: spares(sup) == {"import A": 2}, what="spares started")
    await eventually(lambda: sup.totals.imports == 3, what="spares imported")
    # Submitted together: one REPL works, the warm spares wait.
    jobs = sup.submit_many(_items(8))
    outs = [await j.future for j in jobs]
    assert {o.verdict for o in outs} == {Verdict.VALID}
    assert {o.repl_id for o in outs} == {"repl-1"}
    spans = sorted(
        (j.submitted + o.queue_seconds, j.submitted + o.queue_seconds + o.time_seconds)
        for j, o in zip(jobs, outs, strict=True)
    )
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))


def _items(n: int) -> list[tuple[Split, CheckOptions]]:
    return [
        (split_header(f"import A\ntheorem t{i} := by\n  -- fake: sleep 0.05"), CheckOptions(timeout=10))
        for i in range(n)
    ]


async def test_no_spares_is_todays_pool(started: Started) -> None:
    sup = await started(max_repls=1, spare_repls=0, init_repls={"import A": 1})
    out = await check(sup, "import A\ntheorem t := by\n  -- fake: hang", timeout=0.3)
    assert out.verdict is Verdict.TIMEOUT
    after = await check(sup, "import A\ntheorem ok := 1")
    assert after.repl_id == "repl-2"  # a new process, which imported first
    assert (sup.totals.imports, sup.totals.warm_swaps, sup.totals.cold_swaps) == (2, 0, 1)
    assert spares(sup) == {}


async def test_server_info_shows_spares_and_warm_swaps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEAN_SERVER_SPARE_REPLS", "1")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        host="127.0.0.1",
        port=0,
        repl_command=fake_repl_command(),
        max_repls=1,
        max_repl_mem=None,
        init_repls={"import A": 1},
        sandbox="off",
        auth="off",
        drain_seconds=0,
        grace_seconds=1,
    )
    assert settings.spare_repls == 1
    app = create_app(settings)
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        stub = pb_grpc.VerifierServiceStub(channel)

        async def info() -> pb.GetServerInfoResponse:
            return await stub.GetServerInfo(pb.GetServerInfoRequest())

        async def one_ready_spare() -> bool:
            return [(h.header, h.spares) for h in (await info()).headers] == [("import A", 1)]

        ready: bool = await eventually(one_ready_spare, what="a ready spare in GetServerInfo")
        assert ready
        hang = pb.Proof(
            id="h", code="import A\ntheorem t := by\n  -- fake: hang", options=pb.ProofOptions(timeout_seconds=0.3)
        )
        reply = await stub.Verify(pb.VerifyRequest(proofs=[hang]))
        assert reply.results[0].verdict == pb.VERDICT_TIMEOUT
        got = await info()
        assert (got.counters.warm_swaps, got.counters.cold_swaps) == (1, 0)
        ready = await eventually(one_ready_spare, what="the spare's successor")
        assert ready
    finally:
        await channel.close()
        await app.stop()


async def test_a_repl_lent_to_a_reuse_false_proof_comes_back_as_the_warm_spare(started: Started) -> None:
    sup = await warm_with_spare(started)
    out = await check(sup, "import A\ntheorem t := 1", reuse=False)
    assert out.verdict is Verdict.VALID and out.fresh_repl
    after = await check(sup, "import A\ntheorem ok := 1")
    assert after.repl_id == SPARE
    await eventually(lambda: sup.totals.warm_swaps == 1, what="the spare took the pool's place back")


async def test_pre_warming_counts_the_spares(started: Started, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spares count toward readiness like working REPLs: a server with INIT_REPLS and spares is ready
    once the spares are warm too (its first kill or recycle is served warm); the spares import after
    the working REPLs (one import at a time here)."""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "0.3")
    sup = await started(max_repls=1, spare_repls=2, init_repls={"import A": 1}, max_concurrent_imports=1)
    assert sup.warmup_progress() == (0, 3) and not sup.ready
    await eventually(lambda: sup.ready, what="pre-warmed")
    assert spares(sup) == {"import A": 2} and sup.totals.imports == 3
    assert sup.warmup_progress() == (3, 3) and sup.not_ready_reason == ""


async def test_pre_warm_spares_import_alongside_their_working_repls(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past pre-warming a header gets spares only once it has imported (a header whose imports fail
    would pay each failure twice), but pre-warming's headers were named by the operator: their
    spares import beside the working REPLs, so the server is ready after one import, not two."""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "1")
    sup = await started(max_repls=1, spare_repls=1, init_repls={"import A": 1}, max_concurrent_imports=2)
    await eventually(lambda: [(h.warm, h.starting) for h in sup.state().headers] == [(0, 2)], what="both importing")
    await eventually(lambda: sup.ready, what="pre-warmed")
    assert spares(sup) == {"import A": 1} and sup.totals.imports == 2


async def test_no_spares_pre_warming_is_the_working_repls(started: Started) -> None:
    sup = await started(max_repls=2, spare_repls=0, init_repls={"import A": 2})
    await eventually(lambda: sup.ready, what="pre-warmed")
    assert sup.warmup_progress() == (2, 2) and spares(sup) == {}


async def test_a_spare_waits_for_memory_like_a_working_repl(started: Started, monkeypatch: pytest.MonkeyPatch) -> None:
    """LEAN_SERVER_MIN_FREE_MEMORY holds spares back as it does working REPLs: no spare starts while
    the machine has less available memory, and it starts once there is enough."""
    real = psutil.virtual_memory
    low = [False]

    def memory() -> Any:
        got = real()
        return SimpleNamespace(available=(1 << 20) if low[0] else got.available)

    monkeypatch.setattr(psutil, "virtual_memory", memory)
    sup = await started(max_repls=1, spare_repls=1, init_repls={"import A": 1}, min_free_memory=64 << 20)
    await eventually(lambda: spares(sup) == {"import A": 1}, what="the spare")
    low[0] = True
    out = await check(sup, "import A\ntheorem t := by\n  -- fake: hang", timeout=0.3)
    assert out.verdict is Verdict.TIMEOUT
    assert (await check(sup, "import A\ntheorem ok := 1")).repl_id == SPARE  # the spare took over...
    assert sup.totals.warm_swaps == 1
    assert (
        sup.totals.imports == 2 and spares(sup) == {} and not any(h.starting for h in sup.state().headers)
    )  # ...its successor waits
    low[0] = False
    await eventually(lambda: spares(sup) == {"import A": 1}, what="the successor, once memory is back")
    assert sup.totals.imports == 3


async def test_a_repl_lost_while_its_spare_still_imports_takes_that_spare(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot waits for the rest of the spare's import, not for a whole new process's: the next
    proof runs on the spare (repl-2), and no third process is started for it."""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "2")
    sup = await started(max_repls=1, spare_repls=1, init_repls={"import A": 1}, max_concurrent_imports=1)

    def working_and_spare_importing() -> bool:
        return [(h.warm, h.starting) for h in sup.state().headers] == [(1, 1)]

    await eventually(working_and_spare_importing, what="repl-1 warm, its spare importing")
    out = await check(sup, "import A\ntheorem t := by\n  -- fake: hang", timeout=0.3)
    assert out.verdict is Verdict.TIMEOUT and out.repl_id == "repl-1"
    after = await check(sup, "import A\ntheorem ok := 1")
    assert after.verdict is Verdict.VALID and after.repl_id == SPARE
    # One swap: cold when the kill came while the spare imported (a loaded machine may be slower).
    assert sup.totals.warm_swaps + sup.totals.cold_swaps == 1
    await successor_imports(sup)  # the spare's own successor (repl-3) follows


async def test_spares_memory_holds_back_do_not_keep_the_server_unready(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pre-warm spare that LEAN_SERVER_MIN_FREE_MEMORY keeps from starting does not keep the server
    unready for good: once the REPLs that could start are warm, the server serves (as it did before
    spares counted toward pre-warming), and the spare follows when memory is back."""
    real = psutil.virtual_memory
    low = [True]
    pools: list[Supervisor] = []

    def memory() -> Any:
        # Room for the pool's first REPL only, while `low`.
        full = low[0] and any(p.workers() for p in pools)
        return SimpleNamespace(available=(1 << 20) if full else real().available)

    monkeypatch.setattr(psutil, "virtual_memory", memory)
    sup = await started(max_repls=1, spare_repls=1, init_repls={"import A": 1}, min_free_memory=64 << 20)
    pools.append(sup)
    await eventually(lambda: sup.ready, what="ready without the spare memory holds back")
    assert spares(sup) == {} and [(h.warm, h.starting) for h in sup.state().headers] == [(1, 0)]
    low[0] = False
    await eventually(lambda: spares(sup) == {"import A": 1}, what="the spare, once memory is back")
    assert sup.ready


async def test_a_repl_lost_while_two_spares_import_takes_the_one_started_first(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of two spares still importing, the slot takes the older (the less of an import left), also
    once the ids reach two digits (repl-9 before repl-10)."""
    sup = await started(max_repls=1, spare_repls=2, init_repls={"import A": 1}, max_concurrent_imports=2)
    await eventually(lambda: sup.ready and spares(sup) == {"import A": 2}, what="pre-warmed")
    hang = "import A\ntheorem t := by\n  -- fake: hang"

    def two_warm_spares(imports: int) -> bool:
        return sup.totals.imports == imports and spares(sup) == {"import A": 2}

    for n in range(4, 9):  # each kill swaps a warm spare in and starts the next spare: repl-4 .. repl-8
        assert (await check(sup, hang, timeout=0.3)).verdict is Verdict.TIMEOUT
        await eventually(functools.partial(two_warm_spares, n), what=f"repl-{n} warm")
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "5")
    for _ in range(2):  # two more kills: repl-9, then repl-10, start importing
        assert (await check(sup, hang, timeout=0.3)).verdict is Verdict.TIMEOUT
    await eventually(lambda: [(h.warm, h.starting) for h in sup.state().headers] == [(1, 2)], what="two importing")
    assert (await check(sup, hang, timeout=0.3)).verdict is Verdict.TIMEOUT
    after = await check(sup, "import A\ntheorem ok := 1")
    assert after.verdict is Verdict.VALID and after.repl_id == "repl-9"


async def test_a_pre_warm_spare_lost_while_memory_is_low_does_not_keep_the_server_unready(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pre-warm spare whose import fails (the OOM killer, often, when memory is short) is a standby
    lost, not a header that fails: its successor spare takes its place in pre-warming, and when
    memory holds that one back the server is ready with the REPLs that are warm. (Its readiness retry
    queued a working start the full pool could never make, and no spare started behind it.)"""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "2")
    real = psutil.virtual_memory
    low = [False]
    monkeypatch.setattr(
        psutil, "virtual_memory", lambda: SimpleNamespace(available=(1 << 20) if low[0] else real().available)
    )
    sup = await started(
        max_repls=1, spare_repls=1, init_repls={"import A": 1}, min_free_memory=64 << 20, max_concurrent_imports=1
    )

    def importing_spare() -> int:
        return next((w.repl.pid for w in sup.workers() if w.spare and w.repl is not None), 0)

    await eventually(lambda: [(h.warm, h.starting) for h in sup.state().headers] == [(1, 1)], what="spare importing")
    pid = await eventually(importing_spare, what="the spare's process")
    low[0] = True
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: sup.totals.crashes == 1, what="the spare's import failed")
    await eventually(lambda: sup.ready, what="ready with the working REPL")
    low[0] = False
    await eventually(lambda: spares(sup) == {"import A": 1}, what="a spare, once memory is back")
    assert sup.ready


async def test_a_pool_with_room_grows_by_its_warm_spare_before_importing(started: Started) -> None:
    """Two proofs of a header at once on a pool with room for a second REPL: the idle warm spare of
    that header takes the second at once (no proof waits for an import), and a new spare follows."""
    sup = await started(max_repls=2, spare_repls=1, init_repls={"import A": 1})
    await eventually(lambda: sup.ready and spares(sup) == {"import A": 1}, what="one REPL and its spare warm")
    assert sup.totals.imports == 2
    slow = "import A\ntheorem t := by\n  -- fake: sleep 1\n  trivial"
    outs = await asyncio.gather(check(sup, slow), check(sup, slow))
    assert {o.repl_id for o in outs} == {"repl-1", SPARE}
    await eventually(lambda: spares(sup) == {"import A": 1}, what="the spare's successor")
    assert sup.totals.imports == 3 and (sup.totals.warm_swaps, sup.totals.cold_swaps) == (0, 0)


async def test_a_spare_whose_import_fails_backs_off_and_costs_no_verdict(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spare whose import fails (here the OOM killer: its import needs more memory than the limit)
    while a working REPL of its header is warm is a standby lost, not a header that fails: the
    header's queued proofs wait for the working REPL and get their verdicts (two failed spares used
    to answer them with the spare's crash), readiness holds, and the next spare waits with backoff
    (1 s, doubling) instead of a new process at once, every time; once imports work again a spare
    follows. With no backoff, the failed starts during the two proofs below come one after another."""
    sup = await warm_with_spare(started, spec=ReplSpec(argv=ARGV, max_memory_bytes=400 << 20))
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_MB", "600")  # every new process dies importing
    spare_pid = next(w.repl.pid for w in sup.workers() if w.spare and w.repl is not None)
    os.kill(spare_pid, signal.SIGKILL)
    await eventually(lambda: sup.totals.crashes >= 2, what="the spare died, and its successor's import failed")
    slow = check(sup, "import A\ntheorem t := by\n  -- fake: sleep 2\n  trivial")
    queued = check(sup, "import A\ntheorem ok := 1")
    outs = await asyncio.gather(slow, queued)
    assert [(o.verdict, o.repl_id) for o in outs] == [(Verdict.VALID, "repl-1")] * 2
    # The kill, then failed spare starts 1 s + 2 s (+ 4 s on a slow machine) apart: at most 3 in the window.
    assert sup.totals.crashes <= 1 + 3 and sup.totals.imports == 2
    assert sup.ready and sup.not_ready_reason == ""
    monkeypatch.delenv("KIMINA_FAKE_IMPORT_MB")
    await eventually(lambda: spares(sup) == {"import A": 1}, what="a spare, once imports work again")
    assert sup.totals.imports == 3


@pytest.mark.parametrize(
    ("header", "import_mb", "verdict"),
    [("import Missing.Module", "0", Verdict.INVALID), ("import A", "600", Verdict.OUT_OF_MEMORY)],
    ids=["lean-rejects-the-header", "every-import-dies"],
)
async def test_a_header_that_fails_with_spares_answers_its_proofs_once_and_stops(
    started: Started, monkeypatch: pytest.MonkeyPatch, header: str, import_mb: str, verdict: Verdict
) -> None:
    """With spares, a header that fails (Lean rejects it, or every import of it dies) still answers
    each of its proofs with the header's error, and the pool stops starting REPLs for it: its
    spares' failures are not counted for or against it, and none loops."""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_MB", import_mb)
    sup = await started(max_repls=1, spare_repls=1, spec=ReplSpec(argv=ARGV, max_memory_bytes=400 << 20))
    jobs = [sup.submit(split_header(f"{header}\ntheorem t{i} := 1"), CheckOptions(timeout=10)) for i in range(3)]
    outs = [await job.future for job in jobs]  # all three were queued before the first start failed
    assert [o.verdict for o in outs] == [verdict] * 3 and all("header" in o.error for o in outs)
    await eventually(lambda: not sup.workers(), what="no REPL left for the failed header")
    # Each start is an import (Lean answered it) or a crash: two working starts at most, one spare.
    assert sup.totals.imports + sup.totals.crashes <= 3 and spares(sup) == {}


async def test_a_pre_warm_spare_that_keeps_failing_does_not_keep_the_server_unready(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pre-warming waits for the spares, but not for one whose import failed: a standby lost, not
    capacity. When every new process dies importing from then on, the server is ready with its warm
    working REPL (and serves) while the spares back off; a spare follows once imports work again."""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "2")
    sup = await started(
        max_repls=1,
        spare_repls=1,
        init_repls={"import A": 1},
        max_concurrent_imports=1,
        spec=ReplSpec(argv=ARGV, max_memory_bytes=400 << 20),
    )
    await eventually(lambda: [(h.warm, h.starting) for h in sup.state().headers] == [(1, 1)], what="spare importing")
    pid = await eventually(
        lambda: next((w.repl.pid for w in sup.workers() if w.spare and w.repl is not None), 0), what="its process"
    )
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_MB", "600")  # every new process dies importing
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: sup.ready, what="ready with the working REPL")
    assert (await check(sup, "import A\ntheorem ok := 1")).repl_id == "repl-1"
    assert sup.ready  # and stays so: it did not flicker between two failed spares
    monkeypatch.delenv("KIMINA_FAKE_IMPORT_MB")
    await eventually(lambda: spares(sup) == {"import A": 1}, what="a spare, once imports work again")
    assert sup.ready
