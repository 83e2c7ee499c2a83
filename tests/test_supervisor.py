"""The supervisor with real stand-in REPL processes: reuse, limits, faults, cancellation, shutdown."""

from __future__ import annotations

import asyncio
import functools
import random
from collections import Counter
from pathlib import Path

import pytest

from kimina_grpc.repl import ReplSpec, Verdict, split_header
from kimina_grpc.supervisor import CheckOptions, QueueFull, ShuttingDown, Supervisor
from kimina_grpc.supervisor.jobs import Job, Outcome

from .helpers import eventually
from .helpers.pool import ARGV, Started, check, pool
from .helpers.processes import children


async def test_reuse_by_header_and_no_state_leak(started: Started) -> None:
    sup = await started(max_repls=1)
    outs = [await check(sup, "import A\n\ntheorem same : True := trivial") for _ in range(4)]
    assert [o.verdict for o in outs] == [Verdict.VALID] * 4
    assert len({o.repl_id for o in outs}) == 1
    assert sup.totals.imports == 1


async def test_positions_are_in_the_users_file(started: Started) -> None:
    sup = await started(max_repls=1)
    out = await check(sup, "import A\n\n\ntheorem t : True := by\n  -- fake: error nope\n  trivial")
    assert out.verdict is Verdict.INVALID
    assert out.reply is not None and out.reply.messages[0].pos.line == 5


async def test_timeout_kills_and_pool_recovers_full_warm_strength(started: Started) -> None:
    sup = await started(max_repls=2, init_repls={"import A": 2})
    await eventually(lambda: sup.ready)
    out = await check(sup, "import A\ntheorem t := by\n  -- fake: hang", timeout=0.3)
    assert out.verdict is Verdict.TIMEOUT and out.time_seconds >= 0.3
    assert sup.totals.kills == 1
    await eventually(lambda: sum(h.warm for h in sup.state().headers) == 2, what="two warm REPLs again")
    assert [(h.header, h.warm) for h in sup.state().headers] == [("import A", 2)]


async def test_crash_is_retried_once_then_repl_error(started: Started, tmp_path: Path) -> None:
    sup = await started(max_repls=1)
    flag = tmp_path / "crashed"
    out = await check(sup, f"theorem t := by\n  -- fake: crash-once {flag}")
    assert out.verdict is Verdict.VALID and out.attempts == 2
    out = await check(sup, "theorem t := by\n  -- fake: crash 7")
    assert out.verdict is Verdict.REPL_ERROR and out.attempts == 2
    assert "exit code 7" in out.error and "fake REPL crash" in out.error
    out = await check(sup, "theorem t := by\n  -- fake: garbage")
    assert out.verdict is Verdict.REPL_ERROR and "protocol" in out.error


async def test_out_of_memory_by_cap_and_by_watchdog(started: Started) -> None:
    sup = await started(max_repls=1, spec=ReplSpec(argv=ARGV, max_memory_bytes=400 << 20))
    out = await check(sup, "theorem t := by\n  -- fake: alloc 600")
    assert out.verdict is Verdict.OUT_OF_MEMORY and out.attempts == 1
    # Under the cap, a transient peak is reported (the kernel's high-water mark), not missed.
    out = await check(sup, "theorem s := by\n  -- fake: spike 200", diagnostics=True)
    assert out.verdict is Verdict.VALID and out.peak_memory_bytes >= 200 << 20
    sup2 = await started(max_repls=1, max_repl_rss=150 << 20)
    out = await check(sup2, "theorem t := by\n  -- fake: alloc 250\n  -- fake: sleep 5")
    assert out.verdict is Verdict.OUT_OF_MEMORY and out.peak_memory_bytes > 150 << 20
    assert out.time_seconds < 4
    assert (await check(sup2, "theorem ok := 1")).verdict is Verdict.VALID


async def test_header_rejected_makes_its_proofs_invalid(started: Started) -> None:
    sup = await started(max_repls=1)
    out = await check(sup, "-- intro\nimport Missing.Thing\n\ntheorem t := 1")
    assert out.verdict is Verdict.INVALID
    assert out.reply is not None and out.reply.messages[0].pos.line == 2
    assert "Missing" in out.reply.messages[0].data
    assert (await check(sup, "import A\ntheorem t := 1")).verdict is Verdict.VALID


async def test_a_header_error_points_at_the_import_in_the_users_file(started: Started) -> None:
    sup = await started(max_repls=1)
    out = await check(sup, "import A /- why -/ import Missing.X\ntheorem t := 1")
    assert out.verdict is Verdict.INVALID and out.reply is not None
    [message] = out.reply.messages
    assert (message.pos.line, message.pos.column) == (1, 19)  # `import Missing.X`'s column, not 0


async def test_cancel_frees_queued_jobs(started: Started) -> None:
    sup = await started(max_repls=1)
    first = sup.submit(split_header("theorem t := by\n  -- fake: sleep 0.5"), CheckOptions(timeout=5))
    queued = [sup.submit(split_header(f"theorem q{i} := 1"), CheckOptions(timeout=5)) for i in range(10)]
    await eventually(lambda: sup.queued == 10, what="the REPL started and took the first")
    for job in queued:
        sup.cancel(job)
    assert sup.queued == 0
    assert (await first.future).verdict is Verdict.VALID
    await eventually(lambda: not any(h.busy for h in sup.state().headers), what="the REPL idle")
    assert sup.totals.completed == 1  # the cancelled ten never ran
    assert all(j.future.cancelled() for j in queued)


async def test_max_wait_answers_not_checked(started: Started) -> None:
    sup = await started(max_repls=1, max_wait=0.2, init_repls={"": 1})
    await eventually(lambda: sup.ready)  # the REPL's start is no part of the wait measured here
    slow = sup.submit(split_header("theorem t := by\n  -- fake: sleep 1"), CheckOptions(timeout=5))
    waiting = sup.submit(split_header("theorem u := 1"), CheckOptions(timeout=5))
    out = await waiting.future
    assert out.verdict is Verdict.NOT_CHECKED and "LEAN_SERVER_MAX_WAIT" in out.error
    assert (await slow.future).verdict is Verdict.VALID


async def test_fresh_repl_on_request_and_recycling(started: Started) -> None:
    sup = await started(max_repls=2, max_repl_uses=2)
    fresh = await check(sup, "theorem t := 1", reuse=False)
    assert fresh.fresh_repl and fresh.verdict is Verdict.VALID
    ids = [(await check(sup, f"theorem t{i} := 1")).repl_id for i in range(5)]
    assert len(set(ids)) == 3  # two uses each
    assert sup.totals.recycles >= 2


async def test_queue_bound(started: Started) -> None:
    sup = await started(max_repls=1, max_queue=3)
    jobs = sup.submit_many([(split_header("theorem t := 1"), CheckOptions(timeout=5))] * 3)
    with pytest.raises(QueueFull) as info:
        sup.submit(split_header("theorem t := 1"), CheckOptions(timeout=5))
    assert info.value.retry_after >= 1
    assert [(await j.future).verdict for j in jobs] == [Verdict.VALID] * 3


async def test_submit_when_room_waits_for_the_queue_and_wakes_on_close(started: Started) -> None:
    sup = await started(max_repls=1, max_queue=2)
    slow = (split_header("theorem t := by\n  -- fake: sleep 0.3"), CheckOptions(timeout=5))

    async def fill() -> None:
        sup.submit(*slow)
        await eventually(lambda: not sup.queued, what="running")
        sup.submit_many([slow, slow])  # and two queued: full

    def later() -> asyncio.Future[Job]:
        return asyncio.ensure_future(sup.submit_when_room(split_header("theorem u := 1"), CheckOptions(timeout=5)))

    await fill()
    waiting = later()
    await eventually(lambda: sup.queue.waiting_for_room == 1, what="waiting for room")
    assert not waiting.done() and sup.queued == 2
    job = await asyncio.wait_for(waiting, 5)  # the running proof finished: room
    assert (await job.future).verdict is Verdict.VALID

    # Several waiters get room one at a time, oldest first.
    await fill()
    order: list[int] = []

    async def waiter(i: int) -> Outcome:
        job = await sup.submit_when_room(split_header(f"theorem w{i} := 1"), CheckOptions(timeout=5))
        order.append(i)
        return await job.future

    waiters = [asyncio.ensure_future(waiter(i)) for i in range(3)]
    outs = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert order == [0, 1, 2] and {o.verdict for o in outs} == {Verdict.VALID}

    await fill()
    blocked = later()
    await eventually(lambda: sup.queue.waiting_for_room == 1, what="waiting for room")
    await sup.close()
    with pytest.raises(ShuttingDown):
        await asyncio.wait_for(blocked, 5)


async def test_a_waiter_cancelled_after_its_wake_up_hands_the_room_on(started: Started) -> None:
    sup = await started(max_repls=1, max_queue=2)
    slow = (split_header("theorem t := by\n  -- fake: sleep 5"), CheckOptions(timeout=10))
    sup.submit(*slow)
    await eventually(lambda: not sup.queued, what="running")
    queued = sup.submit_many([slow, slow])
    a, b = (
        asyncio.ensure_future(sup.submit_when_room(split_header(f"theorem {n} := 1"), CheckOptions(timeout=5)))
        for n in "ab"
    )
    await eventually(lambda: sup.queue.waiting_for_room == 2, what="both waiting for room")
    sup.cancel(queued[0])  # room for one: wakes `a` ...
    a.cancel()  # ... which is cancelled before it runs
    job = await asyncio.wait_for(b, 1)  # not 5 s later, when the running proof ends
    assert job.split.body == "theorem b := 1"


async def test_random_fault_mix_loses_and_duplicates_nothing(started: Started, tmp_path: Path) -> None:
    rng = random.Random(7)
    sup = await started(max_repls=3, max_concurrent_imports=3)
    kinds = ["valid"] * 900 + ["error"] * 40 + ["sorry"] * 40 + ["crash"] * 6 + ["garbage"] * 4 + ["hang"] * 4
    kinds += ["crash-once"] * 6
    expected = {
        "valid": Verdict.VALID,
        "error": Verdict.INVALID,
        "sorry": Verdict.SORRY,
        "crash": Verdict.REPL_ERROR,
        "garbage": Verdict.REPL_ERROR,
        "hang": Verdict.TIMEOUT,
        "crash-once": Verdict.VALID,
    }
    items = []
    for i in range(2000):
        kind = rng.choice(kinds)
        header = rng.choice(["", "import A", "import B"])
        arg = f" {tmp_path / str(i)}" if kind == "crash-once" else ""
        directive = "" if kind == "valid" else f"\n  -- fake: {kind}{arg}"
        items.append((kind, f"{header}\ntheorem t{i} : True := by{directive}\n  trivial"))
    answered: Counter[int] = Counter()
    jobs = sup.submit_many((split_header(code), CheckOptions(timeout=0.5)) for _, code in items)
    for i, job in enumerate(jobs):
        job.future.add_done_callback(functools.partial(lambda i, _f: answered.update([i]), i))
    outcomes = await asyncio.wait_for(asyncio.gather(*(j.future for j in jobs)), 240)
    await eventually(lambda: len(answered) == 2000, what="every done callback ran")
    assert len(outcomes) == 2000 and set(answered.values()) == {1} and len(answered) == 2000
    wrong = [(k, o.verdict, o.error) for (k, _), o in zip(items, outcomes, strict=True) if o.verdict != expected[k]]
    assert wrong == []
    assert sup.totals.completed == 2000


async def test_close_answers_everything_and_kills_every_repl() -> None:
    sup = pool(max_repls=2)
    await sup.start()
    jobs = [sup.submit(split_header("theorem t := by\n  -- fake: sleep 5"), CheckOptions(timeout=10)) for _ in range(5)]
    await eventually(children, what="REPLs started")
    await sup.close()
    outs = [j.future.result() for j in jobs]
    assert {o.verdict for o in outs} == {Verdict.NOT_CHECKED}
    assert children() == []


async def test_prewarm_respects_the_import_bound_and_reports_progress(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "0.3")
    sup = await started(max_repls=4, max_concurrent_imports=1, init_repls={"import A": 3, "import B": 1})
    starting: list[int] = []
    progress = []

    def sampled_until_ready() -> bool:
        starting.append(sum(h.starting for h in sup.state().headers))
        progress.append(sup.warmup_progress())
        return sup.ready

    await eventually(sampled_until_ready)
    assert max(starting) == 1
    assert progress[0][1] == 4 and sup.warmup_progress() == (4, 4)
    assert sorted((h.header, h.warm) for h in sup.state().headers) == [("import A", 3), ("import B", 1)]


def timeline(jobs: list[Job], outcomes: list[Outcome]) -> list[tuple[float, str, str]]:
    """(start time, header, REPL id) of every job, in start order."""
    return sorted(
        (j.submitted + o.queue_seconds, j.split.header.strip(), o.repl_id) for j, o in zip(jobs, outcomes, strict=True)
    )


async def run_interleaved(
    sup: Supervisor, headers: list[str], per_header: int, cost: float
) -> list[tuple[float, str, str]]:
    items = [
        (split_header(f"{h}\ntheorem t{i} : True := by\n  -- fake: sleep {cost}\n  trivial"), CheckOptions(timeout=10))
        for i in range(per_header)
        for h in headers
    ]
    jobs = sup.submit_many(items)
    outcomes = await asyncio.wait_for(asyncio.gather(*(j.future for j in jobs)), 60)
    assert {o.verdict for o in outcomes} == {Verdict.VALID}
    return timeline(jobs, outcomes)


async def importing_pool(started: Started, monkeypatch: pytest.MonkeyPatch, repls: int) -> Supervisor:
    """A started pool whose imports take 0.1 s, all of them at once if need be."""
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "0.1")
    return await started(max_repls=repls, max_concurrent_imports=repls)


async def test_a_lagging_header_gets_a_repl_while_the_other_still_has_work(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3 REPLs over 2 equal headers start 2/1; the header with one REPL would finish at twice the time.
    sup = await importing_pool(started, monkeypatch, repls=3)
    runs = await run_interleaved(sup, ["import A", "import B"], per_header=30, cost=0.15)
    repls = {h: [r for _, hh, r in runs if hh == h] for h in ("import A", "import B")}
    assert len(set(repls["import B"])) >= 2
    first_b_on_a_new_repl = next(t for t, h, r in runs if h == "import B" and r != repls["import B"][0])
    last_a = max(t for t, h, _ in runs if h == "import A")
    assert first_b_on_a_new_repl < last_a  # moved while A still had work, not after A drained
    assert sup.totals.recycles <= 2


async def test_balanced_headers_keep_their_repls(started: Started, monkeypatch: pytest.MonkeyPatch) -> None:
    sup = await importing_pool(started, monkeypatch, repls=4)
    runs = await run_interleaved(sup, ["import A", "import B"], per_header=20, cost=0.03)
    assert sup.totals.imports == 4 and sup.totals.recycles == 0
    assert len({r for _, _, r in runs}) == 4


async def test_a_drained_headers_idle_repl_converts_to_waiting_work(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    sup = await importing_pool(started, monkeypatch, repls=2)
    first = await run_interleaved(sup, ["import A", "import B"], per_header=2, cost=0.01)
    assert {h for _, h, _ in first} == {"import A", "import B"}
    # 6 s of B on one REPL: a second one pays while an import (a process's start with it) costs up
    # to half that. With 2 s, a start slowed past 1 s (a loaded machine) rightly kept A's REPL idle.
    runs = await run_interleaved(sup, ["import B"], per_header=40, cost=0.15)
    assert len({r for _, _, r in runs}) == 2  # A's idle REPL now serves B
    assert sup.totals.recycles == 1
