"""Starts that fail and what the pool owes after them, on stand-in REPLs: a working REPL whose import
fails is replaced without waiting for new work (with the start backoff while a REPL of its header
serves, so no restart loop); pre-warming is done when the pre-warm REPLs, or their replacements,
are warm (not when one went before it was); a readiness retry that waits for a slot of a full pool
does not hold the warm spares back."""

from __future__ import annotations

import functools
import os
import signal

import pytest

from kimina_grpc.repl import ReplSpec, Verdict, split_header
from kimina_grpc.supervisor import CheckOptions, Supervisor
from kimina_grpc.supervisor.workers import WorkerState

from .helpers import eventually
from .helpers.pool import ARGV, Started, check, repl_pids


def importing(sup: Supervisor) -> list[int]:
    """The pids of the REPLs importing their header now."""
    return [w.repl.pid for w in sup.workers() if w.state is WorkerState.STARTING and w.repl is not None]


def importing_after(sup: Supervisor, crashes: int) -> list[int]:
    """The pids importing, once `crashes` REPLs crashed (none before)."""
    return importing(sup) if sup.totals.crashes == crashes else []


def crashed(sup: Supervisor, crashes: int) -> bool:
    return sup.totals.crashes == crashes


def warm_of(sup: Supervisor) -> list[tuple[str, int]]:
    return [(h.header, h.warm) for h in sup.state().headers if h.warm]


def spares(sup: Supervisor) -> dict[str, int]:
    return {h.header: h.spares for h in sup.state().headers if h.spares}


async def test_a_replacement_whose_import_fails_is_replaced_without_new_work(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A REPL killed by its proof's timeout is replaced; that replacement dies importing (no REPL of
    the header is warm): the pool starts another at once instead of staying a REPL short until a
    proof of the header comes (it stayed empty)."""
    sup = await started(max_repls=1)
    assert (await check(sup, "import A\ntheorem t := 1")).repl_id == "repl-1"
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "3")
    out = await check(sup, "import A\ntheorem t := by\n  -- fake: hang", timeout=0.3)
    assert out.verdict is Verdict.TIMEOUT and out.repl_id == "repl-1"
    [pid] = await eventually(lambda: importing(sup), what="the replacement importing")
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: sup.totals.crashes == 1, what="the replacement's import failed")
    await eventually(lambda: warm_of(sup) == [("import A", 1)], what="the pool's REPL back, with no proof queued")
    assert sup.totals.imports == 2 and sup.ready
    after = await check(sup, "import A\ntheorem ok := 1")
    assert after.verdict is Verdict.VALID and after.repl_id == "repl-3"


async def test_a_working_repl_whose_imports_keep_failing_is_replaced_with_backoff(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One of two warm REPLs dies, and every new process dies importing (the OOM killer) while the
    other serves: its replacement is tried again with the start backoff (1 s, doubling), not in a
    loop and not only when proofs of the header queue; the proofs are served by the warm REPL, the
    server stays ready, and once imports work the pool has its two REPLs again (it stayed at one)."""
    sup = await started(max_repls=2, init_repls={"import A": 2}, spec=ReplSpec(argv=ARGV, max_memory_bytes=400 << 20))
    await eventually(lambda: sup.ready, what="pre-warmed")
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_MB", "600")  # every new process dies importing
    os.kill(repl_pids(sup)[0], signal.SIGKILL)
    await eventually(lambda: sup.totals.crashes >= 2, what="the dead REPL's replacement failed")
    out = await check(sup, "import A\ntheorem t := by\n  -- fake: sleep 2\n  trivial")
    assert out.verdict is Verdict.VALID and sup.ready
    # The death, then failed starts 1 s, 2 s, 4 s (8 s on a slow machine) apart: a loop makes dozens.
    assert sup.totals.crashes <= 1 + 4 and sup.totals.imports == 2
    monkeypatch.delenv("KIMINA_FAKE_IMPORT_MB")
    await eventually(lambda: warm_of(sup) == [("import A", 2)], timeout=60, what="two REPLs once imports work")
    assert sup.totals.imports == 3 and sup.ready


async def test_pre_warming_waits_for_the_replacement_of_a_pre_warm_repl_that_went(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pre-warm REPL that dies importing is not a REPL ready: pre-warming counts only REPLs that
    are warm, and is done when its replacement is (it counted the dead one, and the server said
    ready with one of its two REPLs, the other never started again)."""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "2")
    sup = await started(max_repls=2, init_repls={"import A": 2})
    pids = await eventually(lambda: pids if len(pids := importing(sup)) == 2 else [], what="both importing")
    os.kill(pids[0], signal.SIGKILL)
    samples: list[tuple[int, int]] = []

    def sampled_until_ready() -> bool:
        samples.append((sup.warmup_progress()[0], sum(h.warm for h in sup.state().headers)))
        return sup.ready

    await eventually(sampled_until_ready, what="pre-warmed")
    assert all(done <= warm for done, warm in samples), samples
    assert warm_of(sup) == [("import A", 2)] and sup.warmup_progress() == (2, 2)


async def test_a_readiness_retry_waiting_for_a_slot_does_not_hold_the_spares_back(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pre-warm header Lean rejects is tried again in the background; while a proof of another
    header holds the pool's one slot, that retry waits for a slot, and the other header's warm
    spare starts all the same (a spare takes no slot; it waited behind the retry for good)."""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "2")
    sup = await started(max_repls=1, spare_repls=1, init_repls={"import Missing.X": 1}, max_concurrent_imports=1)
    await eventually(lambda: "Missing" in sup.not_ready_reason, what="the pre-warm header failed")
    # Its REPL (2 s of import) takes the slot before the retry comes (1 s after the failure).
    assert (await check(sup, "import A\ntheorem t := 1")).verdict is Verdict.VALID
    await eventually(lambda: spares(sup) == {"import A": 1}, what="A's spare")
    assert not sup.ready and "Missing" in sup.not_ready_reason


async def test_a_repl_lent_to_a_reuse_false_proof_whose_import_fails_gives_the_pool_repl_back(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's one REPL (A) is converted into a REPL for one reuse=false proof; that one dies
    importing: the proof is checked on another, and the pool gets its REPL of A back (it was left
    with none: the second fresh REPL did not know whose place it had)."""
    sup = await started(max_repls=1)
    assert (await check(sup, "import A\ntheorem t := 1")).repl_id == "repl-1"
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "2")
    job = sup.submit(split_header("import A\ntheorem f := 1"), CheckOptions(timeout=30, reuse=False))
    [pid] = await eventually(lambda: importing(sup), what="the fresh REPL importing")
    os.kill(pid, signal.SIGKILL)
    out = await job.future
    assert out.verdict is Verdict.VALID and out.fresh_repl and sup.totals.crashes == 1
    await eventually(lambda: warm_of(sup) == [("import A", 1)], what="the pool's REPL of A back")


async def test_a_failed_pre_warm_header_whose_retry_waits_for_a_slot_recovers_when_it_imports(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pre-warm header H fails (its REPL and that one's replacement die importing), and a proof
    of A takes the pool's one slot before H's background retry comes: the retry waits for a slot,
    A's spare starts all the same, and once a REPL of H imports (a proof of H takes A's idle REPL)
    the server is ready again."""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "2")
    sup = await started(max_repls=1, spare_repls=1, init_repls={"import H": 1}, max_concurrent_imports=1)
    for n in (1, 2):
        [pid] = await eventually(functools.partial(importing_after, sup, n - 1), what=f"H's REPL {n} importing")
        os.kill(pid, signal.SIGKILL)
        await eventually(functools.partial(crashed, sup, n), what=f"H's REPL {n} died")
    await eventually(lambda: "import H" in sup.not_ready_reason, what="the pre-warm header failed")
    assert (await check(sup, "import A\ntheorem t := 1")).verdict is Verdict.VALID
    await eventually(lambda: spares(sup) == {"import A": 1}, what="A's spare")
    assert not sup.ready
    assert (await check(sup, "import H\ntheorem h := 1")).verdict is Verdict.VALID
    await eventually(lambda: sup.ready, what="ready once H imported")
    assert sup.not_ready_reason == "" and sup.warmup_progress() == (2, 2)
