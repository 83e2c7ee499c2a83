"""Edges of the restarts of REPLs whose starts fail (test_restarts.py has the main cases), on
stand-in REPLs: pre-warm places left by REPLs that died importing are all filled again once the
header imports; a REPL lent to a reuse=false proof whose header Lean rejects gives the pool's REPL
back; a header that failed starts no more REPLs of its own; readiness says an import timed out; a
REPL whose import failed gives its place of pre-warming to a replacement started while it is reaped;
a header one of whose REPLs imported while another's failure was reaped is not failed."""

from __future__ import annotations

import os
import signal

import pytest

from kimina_grpc.repl import Repl, ReplSpec, Verdict, split_header
from kimina_grpc.supervisor import CheckOptions, Supervisor
from kimina_grpc.supervisor.jobs import Job
from kimina_grpc.supervisor.workers import WorkerState

from .helpers import eventually
from .helpers.pool import ARGV, Started, check


def importing(sup: Supervisor) -> list[int]:
    """The pids of the REPLs importing their header now."""
    return [w.repl.pid for w in sup.workers() if w.state is WorkerState.STARTING and w.repl is not None]


def warm_of(sup: Supervisor) -> list[tuple[str, int]]:
    return [(h.header, h.warm) for h in sup.state().headers if h.warm]


async def test_pre_warm_places_of_repls_that_died_importing_are_all_filled_again(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both pre-warm REPLs of H die importing: the header fails (a second failure in a row), one
    replacement was queued by the first. Once it imports, the other place is started again too and
    the server is ready with two REPLs of H (the retry on recovery was skipped while the REPL that
    recovered was still settling: one REPL, never ready)."""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "2")
    sup = await started(max_repls=2, init_repls={"import H": 2})
    pids = await eventually(lambda: pids if len(pids := importing(sup)) == 2 else [], what="both importing")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    await eventually(lambda: sup.totals.crashes == 2, what="both died importing")
    await eventually(lambda: sup.ready, timeout=30, what="ready again")
    assert warm_of(sup) == [("import H", 2)] and sup.warmup_progress() == (2, 2)


async def test_a_header_that_failed_starts_no_more_repls_of_its_own(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four proofs of a header whose import always times out: four REPLs import it at once. The
    first failure queues a replacement, the second fails the header (each proof gets one answer,
    the import's error); the other two fail after that and are not replaced, nor is a replacement
    queued before it started (the header kept restarting: 8 starts for 4 proofs)."""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "60")
    sup = await started(max_repls=4, max_concurrent_imports=4, import_timeout=1.0)
    jobs = [sup.submit(split_header(f"import A\ntheorem t{i} := 1"), CheckOptions(timeout=30)) for i in range(4)]
    outs = [await job.future for job in jobs]
    assert all(o.verdict is Verdict.TIMEOUT and "importing the header" in (o.error or "") for o in outs), outs
    await eventually(lambda: not sup.workers() and not sup.lifecycle.to_start, timeout=30, what="nothing left of it")
    # The four started for the proofs, and at most the replacement the first failure queued.
    assert sup.totals.crashes <= 5, sup.totals.crashes


async def test_a_repl_lent_to_a_reuse_false_proof_whose_header_lean_rejects_gives_the_pool_repl_back(
    started: Started,
) -> None:
    """The pool's one REPL (A) is converted into a REPL for one reuse=false proof whose imports Lean
    rejects: the proof gets Lean's verdict, and the pool gets its REPL of A back (it was left with
    none until a proof of A came)."""
    sup = await started(max_repls=1)
    assert (await check(sup, "import A\ntheorem t := 1")).repl_id == "repl-1"
    out = await check(sup, "import Missing.X\ntheorem f := 1", reuse=False)
    assert out.verdict is not Verdict.VALID and "Missing" in str(out.reply), out
    await eventually(lambda: warm_of(sup) == [("import A", 1)], what="the pool's REPL of A back")


async def test_readiness_says_a_pre_warm_import_timed_out(started: Started, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pre-warm header whose import times out: readiness says so (it said "pre-warm header
    'import H' failed: " and nothing more: a TimeoutError has no text)."""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "60")
    sup = await started(max_repls=1, init_repls={"import H": 1}, import_timeout=0.5)
    await eventually(lambda: "import H" in sup.not_ready_reason, what="the pre-warm header failed")
    assert "took over 0.5 s" in sup.not_ready_reason, sup.not_ready_reason


async def test_a_pre_warm_repl_whose_import_failed_passes_its_place_to_a_replacement_started_while_it_is_reaped(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one pre-warm REPL's import times out; while it is being killed and reaped, a proof of its
    header comes and its replacement starts: the replacement takes its place of pre-warming, and
    the server is ready once it is warm (the place was given up only after the reaping, nobody
    took it, and the retry on recovery waited for a slot of the full pool for good)."""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "60")
    sup = await started(max_repls=1, init_repls={"import H": 1}, import_timeout=1.0)
    await eventually(lambda: importing(sup), what="the pre-warm REPL importing")
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "0")  # its replacement imports at once
    jobs: list[Job] = []
    kill = Repl.kill

    async def slow_kill(repl: Repl) -> None:
        if not jobs:  # the timed-out REPL: a proof of its header comes while it is reaped
            jobs.append(sup.submit(split_header("import H\ntheorem t := 1"), CheckOptions(timeout=30)))
            await eventually(lambda: importing(sup) or warm_of(sup), what="its replacement started")
        await kill(repl)

    monkeypatch.setattr(Repl, "kill", slow_kill)
    await eventually(lambda: jobs, what="the import timed out")
    assert (await jobs[0].future).verdict is Verdict.VALID
    await eventually(lambda: sup.ready, what="ready with the replacement warm")
    assert warm_of(sup) == [("import H", 1)] and sup.warmup_progress() == (1, 1)


async def test_proofs_of_a_header_a_repl_imported_while_its_second_failure_was_reaped_are_checked(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A REPL imports H for one proof; a second proof comes, and the new REPLs of H die importing
    (out of memory) twice in a row, none of H warm yet; while the second one is reaped the first
    REPL imports H: both proofs are checked on it (the header was judged failing before the
    reaping, and the proof still queued after it got the import's error)."""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "3")
    sup = await started(max_repls=2, max_concurrent_imports=2, spec=ReplSpec(argv=ARGV, max_memory_bytes=400 << 20))
    slow = "import H\ntheorem t1 := by\n  -- fake: sleep 1\n  trivial"  # the second proof waits for it
    first = sup.submit(split_header(slow), CheckOptions(timeout=30))
    await eventually(lambda: importing(sup), what="the first REPL importing")
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_MB", "600")  # every new process dies importing
    kill = Repl.kill

    async def slow_kill(repl: Repl) -> None:
        if sup.totals.crashes == 2:  # the second failure is reaped while the first REPL imports
            await eventually(
                lambda: [w for w in sup.workers() if w.state is WorkerState.BUSY],
                what="the first REPL warm, on the first proof",
            )
        await kill(repl)

    monkeypatch.setattr(Repl, "kill", slow_kill)
    second = sup.submit(split_header("import H\ntheorem t2 := 1"), CheckOptions(timeout=30))
    outs = [await first.future, await second.future]
    assert [o.verdict for o in outs] == [Verdict.VALID, Verdict.VALID], outs
