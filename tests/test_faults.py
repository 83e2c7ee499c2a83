"""Exactly once under every fault (issue 17, the supervisor's part): REPLs that die or stop while
idle, callers that go away, stderr that belongs to another proof, memory bounded in bytes, headers
that come and go."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kimina_grpc.repl import Repl, ReplCrashed, ReplSpec, Verdict, split_header
from kimina_grpc.repl.protocol import command
from kimina_grpc.supervisor import CheckOptions, QueueFull
from kimina_grpc.supervisor.queue import ShuttingDown
from kimina_grpc.testing import fake_repl_command, serve_process
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually, eventually_sync
from .helpers.cache import checks
from .helpers.pool import ARGV, Started, busy, check, repl_pids, warm
from .helpers.processes import children, gone, stand_ins


def test_writing_to_a_dead_repl_under_uvloop_is_a_crash() -> None:
    async def scenario() -> None:
        repl = await Repl.start(ReplSpec(argv=ARGV), "t")
        await repl.run(command(""))
        os.kill(repl.pid, signal.SIGKILL)
        await eventually(lambda: gone(repl.pid), what="the REPL died")
        with pytest.raises(ReplCrashed, match="exited"):
            await repl.run(command("theorem t := 1", env=0))
        await repl.kill()

    uvloop.run(scenario())


async def test_a_repl_killed_while_idle_is_replaced_and_no_proof_hangs(started: Started) -> None:
    sup = await started(max_repls=2, init_repls={"": 2})
    await warm(sup, 2)
    os.kill(repl_pids(sup)[0], signal.SIGKILL)
    outs = await asyncio.wait_for(asyncio.gather(*(check(sup, f"theorem t{i} := 1") for i in range(6))), 30)
    assert [o.verdict for o in outs] == [Verdict.VALID] * 6
    for pid in repl_pids(sup):
        os.kill(pid, signal.SIGKILL)
    outs = await asyncio.wait_for(asyncio.gather(*(check(sup, f"theorem u{i} := 1") for i in range(6))), 30)
    assert [o.verdict for o in outs] == [Verdict.VALID] * 6
    await warm(sup, 2)
    assert all(h.busy == 0 for h in sup.state().headers) and sup.ready


async def test_a_stopped_idle_repl_never_times_out_an_innocent_proof(started: Started) -> None:
    sup = await started(max_repls=1, init_repls={"": 1})
    await warm(sup, 1)
    pid = repl_pids(sup)[0]
    os.kill(pid, signal.SIGSTOP)
    out = await check(sup, "theorem t := 1", timeout=2)
    assert out.verdict is Verdict.VALID
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_a_repl_stopped_mid_proof_is_retried_not_blamed(started: Started) -> None:
    sup = await started(max_repls=1, init_repls={"": 1})
    await warm(sup, 1)
    job = sup.submit(split_header("theorem t := by\n  -- fake: sleep 0.5"), CheckOptions(timeout=2))
    await busy(sup, 1)  # sent: the stand-in is in its sleep
    os.kill(repl_pids(sup)[0], signal.SIGSTOP)
    out = await job.future
    assert out.verdict is Verdict.VALID and out.attempts == 2


async def test_a_repl_stopped_while_importing_is_replaced_before_the_import_timeout(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "1")
    sup = await started(max_repls=1, import_timeout=300)
    job = sup.submit(split_header("import A\ntheorem t := 1"), CheckOptions(timeout=5))
    (pid,) = await eventually(lambda: repl_pids(sup), what="the REPL started")
    os.kill(pid, signal.SIGSTOP)
    # The old pool waited out the import timeout (300 s) with the proof queued behind it.
    out = await asyncio.wait_for(job.future, 30)
    assert out.verdict is Verdict.VALID
    assert sup.totals.crashes == 1


async def test_a_crash_reports_only_its_own_proofs_stderr(started: Started) -> None:
    sup = await started(max_repls=1)
    assert (await check(sup, "theorem a := by\n  -- fake: stderr 5000")).verdict is Verdict.VALID
    out = await check(sup, "theorem b := by\n  -- fake: crash 3")
    assert out.verdict is Verdict.REPL_ERROR and "fake REPL crash" in out.error
    assert "xxxxx" not in out.error


async def test_a_gone_caller_stops_its_long_proof_and_frees_the_repl(started: Started) -> None:
    sup = await started(max_repls=1, init_repls={"": 1})
    await warm(sup, 1)
    sup.import_cost.value = 0.3  # a cheap import: waiting is not worth it
    job = sup.submit(split_header("theorem t := by\n  -- fake: hang"), CheckOptions(timeout=60))
    await busy(sup, 1)
    sup.cancel(job)
    out = await asyncio.wait_for(check(sup, "theorem u := 1", timeout=60), 10)
    assert out.verdict is Verdict.VALID
    assert sup.totals.kills == 1


async def test_a_cancelled_job_is_never_retried(started: Started, tmp_path: Path) -> None:
    sup = await started(max_repls=1, init_repls={"": 1})
    await warm(sup, 1)
    sup.import_cost.value = 60  # let it finish rather than kill (set once an import was measured)
    flag = tmp_path / "f"
    job = sup.submit(
        split_header(f"theorem t := by\n  -- fake: sleep 0.3\n  -- fake: crash-once {flag}"), CheckOptions(timeout=5)
    )
    await busy(sup, 1)
    sup.cancel(job)
    # The one REPL takes jobs in order: once the next proof is answered, a retry would have run or be
    # queued.
    assert (await check(sup, "theorem u := 1")).verdict is Verdict.VALID
    assert flag.exists() and job.future.cancelled()
    assert sup.totals.completed == 2 and sup.queued == 0  # answered once (dropped), not re-queued


async def test_the_queue_is_bounded_in_bytes_and_gives_them_back(started: Started) -> None:
    sup = await started(max_repls=1, max_queue_bytes=3 << 20, init_repls={"": 1})
    await warm(sup, 1)
    big = "theorem t := by\n  -- fake: sleep 5\n" + "-- pad\n" * (150_000)  # about 1 MiB
    running = sup.submit(split_header(big), CheckOptions(timeout=10))
    await busy(sup, 1)  # taken by the REPL: its bytes are no longer queued
    queued = sup.submit_many([(split_header(big), CheckOptions(timeout=10))] * 2)
    assert sup.queued_bytes > 2 << 20
    with pytest.raises(QueueFull):
        sup.submit_many([(split_header(big), CheckOptions(timeout=10))] * 2)
    for job in [*queued, running]:
        sup.cancel(job)
    assert sup.queued_bytes == 0 and sup.queued == 0


async def test_header_bookkeeping_is_dropped_and_the_view_is_bounded(started: Started) -> None:
    sup = await started(max_repls=1)
    long = "Mod" + "x" * 1000
    jobs = [sup.submit(split_header(f"import {long}{i}\ntheorem t := 1"), CheckOptions(timeout=10)) for i in range(150)]
    view = sup.state().headers
    assert len(view) == 100 and all(len(h.header) <= 201 for h in view)
    for job in jobs:
        sup.cancel(job)
    # Only the header the REPL holds is left.
    await eventually(lambda: len(sup.queue.known_keys()) <= 1 and len(sup.state().headers) <= 1)


def _health(port: int) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="kimina_grpc.v1.VerifierService"), timeout=5
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _info(port: int) -> pb.GetServerInfoResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return pb_grpc.VerifierServiceStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=5)


def test_serve_with_a_repl_that_cannot_start_is_not_ready_until_fixed(tmp_path: Path) -> None:
    script = tmp_path / "repl.sh"
    env = {"LEAN_SERVER_REPL_COMMAND": str(script), "LEAN_SERVER_INIT_REPLS": '{"import A": 1}'}
    with serve_process(env) as (_, port):
        # Until its start failed: then the reason names the command, and it is still not ready.
        eventually_sync(lambda: str(script) in _info(port).not_ready_reason, what="the start failed")
        assert not _info(port).ready and _health(port) == "NOT_SERVING"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            live = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="liveness"), timeout=5
            )
        assert live.status == health_pb2.HealthCheckResponse.SERVING
        script.write_text(f"#!/bin/sh\nexec {fake_repl_command()}\n")
        script.chmod(0o755)
        eventually_sync(lambda: _health(port) == "SERVING", what="ready once the command is fixed")


async def test_a_gone_caller_stops_its_trust_review_too(started: Started, fake_log: Path) -> None:
    from kimina_grpc.supervisor.jobs import TrustLevel, TrustPolicy

    sup = await started(max_repls=1, init_repls={"": 1})
    await warm(sup, 1)
    sup.import_cost.value = 0.3  # a cheap import: waiting is not worth it
    policy = TrustPolicy(TrustLevel.AUDIT, theorem="t")
    code = "theorem t : True := trivial\n-- fake: hang-print-axioms"
    job = sup.submit(split_header(code), CheckOptions(timeout=60, trust=policy))
    # The body is checked; its audit's `#print axioms` never returns.
    await eventually(lambda: "#print axioms" in " ".join(checks(fake_log)), what="the audit started")
    sup.cancel(job)
    out = await asyncio.wait_for(check(sup, "theorem u := 1", timeout=60), 10)
    assert out.verdict is Verdict.VALID


async def test_a_deadline_covers_the_queue_and_no_answer_is_lost() -> None:
    """A Verify whose deadline comes before every proof can run still gets every answer in time:
    the ones that ran, and NOT_CHECKED for those still queued (not DEADLINE_EXCEEDED for all)."""
    from kimina_grpc.v1 import verifier_pb2 as pb
    from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

    from .helpers.server import running

    async with running(max_repls=1, init_repls={"import A": 1}) as (app, ch):
        await eventually(lambda: app.supervisor.ready)
        stub = pb_grpc.VerifierServiceStub(ch)
        proofs = [
            pb.Proof(id=f"p{i}", code=f"import A\ntheorem t{i} : True := by\n  -- fake: sleep 1\n  trivial")
            for i in range(3)
        ]
        reply = await stub.Verify(pb.VerifyRequest(proofs=proofs), timeout=2.5)  # no DEADLINE_EXCEEDED
        verdicts = [r.verdict for r in reply.results]
        assert verdicts[0] == pb.VERDICT_VALID
        assert verdicts[1] in (pb.VERDICT_VALID, pb.VERDICT_TIMEOUT)  # VALID unless the machine is slow
        assert verdicts[2] in (pb.VERDICT_NOT_CHECKED, pb.VERDICT_TIMEOUT)


# ---------------------------------------------------------------- a process that escaped the REPL's tree


def _with_escaped_daemon(pids: Path) -> ReplSpec:
    """A REPL whose proof started a process that left its tree (`setsid cmd &` from `#eval
    IO.Process.spawn`, unboxed) and keeps its stdout and stderr open."""
    daemon = f"(setsid sleep 60 </dev/null & echo $! >> {shlex.quote(str(pids))})"
    return ReplSpec(argv=("sh", "-c", f"{daemon}; exec {shlex.join(ARGV)}"))


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
@pytest.mark.parametrize(
    ("directive", "verdict"), [("hang", Verdict.TIMEOUT), ("crash", Verdict.REPL_ERROR)], ids=["hang", "crash"]
)
def test_a_process_holding_the_repls_pipes_never_wedges_a_proof(
    run: Callable[[Coroutine[Any, Any, None]], None], directive: str, verdict: Verdict, tmp_path: Path
) -> None:
    """A timeout or a crash is answered at once although something still holds the REPL's pipes
    (asyncio's Process.wait() waits for them), and the REPL slot serves the next proof."""
    from .helpers.pool import pool

    pids = tmp_path / "daemons"

    async def scenario() -> None:
        sup = pool(spec=_with_escaped_daemon(pids), max_repls=1)
        await sup.start()
        try:
            started = time.monotonic()
            out = await asyncio.wait_for(check(sup, f"theorem t := 1\n-- fake: {directive}", timeout=1.0), 20)
            assert out.verdict is verdict
            assert time.monotonic() - started < 10  # not the daemon's 60 s
            after = await asyncio.wait_for(check(sup, "theorem u := 1"), 20)
            assert after.verdict is Verdict.VALID
        finally:
            await asyncio.wait_for(sup.close(), 20)

    try:
        run(scenario())
    finally:
        for pid in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


async def test_an_idle_repl_that_dies_while_something_holds_its_pipes_is_replaced(tmp_path: Path) -> None:
    from .helpers.pool import pool

    pids = tmp_path / "daemons"
    sup = pool(spec=_with_escaped_daemon(pids), max_repls=1, init_repls={"": 1})
    await sup.start()
    try:
        await warm(sup, 1)
        os.kill(repl_pids(sup)[0], signal.SIGKILL)
        # Noticed while idle, not when the next proof is sent.
        await eventually(lambda: sup.totals.crashes == 1, what="the crash noticed")
        assert (await asyncio.wait_for(check(sup, "theorem u := 1"), 20)).verdict is Verdict.VALID
    finally:
        await asyncio.wait_for(sup.close(), 20)
        for pid in pids.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def test_a_close_during_a_dead_repls_kill_still_closes_its_pipes(tmp_path: Path) -> None:
    """The server closes while a REPL that died (something still holds its pipes) is being killed:
    the close cancels that kill, which still closes our ends of the REPL's pipes. Left open, the
    process's transport outlives its loop and fails when collected ('Event loop is closed')."""
    import gc
    import sys

    from .helpers.pool import pool

    pids = tmp_path / "daemons"
    caught: list[str] = []

    async def scenario() -> None:
        sup = pool(spec=_with_escaped_daemon(pids), max_repls=1, init_repls={"": 1})
        await sup.start()
        try:
            await warm(sup, 1)
            os.kill(repl_pids(sup)[0], signal.SIGKILL)
            # Its kill now waits for last words the held pipes never end: the close lands there.
            await eventually(lambda: sup.totals.crashes == 1, interval=0.005, what="the crash noticed")
        finally:
            await asyncio.wait_for(sup.close(), 20)

    previous = sys.unraisablehook
    sys.unraisablehook = lambda u: caught.append(f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}")
    try:
        asyncio.run(scenario())
        gc.collect()
    finally:
        sys.unraisablehook = previous
        for pid in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    assert caught == []


# ---------------------------------------------------------------- the proof's time is the REPL's


async def test_parsing_a_reply_counts_against_the_timeout_but_never_kills_the_repl(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timeout covers the REPL's work and the parsing of its reply (issue 24: 28 s of parsing no
    timeout covered): a parse past it is the proof's TIMEOUT, but the REPL answered in time, so it is
    never killed for it and the next proof runs on it."""
    from kimina_grpc.repl import decode as decoding

    slow = decoding._Helper.parse

    async def parse(self: decoding._Helper, raw: bytes, shift: int, max_items: int) -> object:
        await asyncio.sleep(1.0)  # as a reply of tens of MiB takes
        return await slow(self, raw, shift, max_items)

    monkeypatch.setattr(decoding._Helper, "parse", parse)
    sup = await started(max_repls=1)
    out = await check(sup, "theorem t := 1\n-- fake: output 0.5", timeout=0.5)  # over 128 KiB: the helper's
    assert out.verdict is Verdict.TIMEOUT and "could not be read within the proof's timeout" in out.error
    assert out.time_seconds < 0.5  # the REPL's time, not the parse's
    assert sup.totals.kills == 0
    again = await check(sup, "theorem u := 1", timeout=5)
    assert again.verdict is Verdict.VALID and again.repl_id == out.repl_id


# ---------------------------------------------------------------- gone callers


async def test_a_caller_gone_before_its_check_starts_takes_no_repl(started: Started) -> None:
    """Cancelled between dispatch and the first step of its check: it never runs, the REPL is free."""
    sup = await started(max_repls=1, init_repls={"": 1})
    await warm(sup, 1)
    job = sup.submit(split_header("theorem t := 1\n-- fake: hang"), CheckOptions(timeout=30))
    await asyncio.sleep(0)  # the scheduler ran: the job is on the REPL, its task not started yet
    sup.cancel(job)
    out = await asyncio.wait_for(check(sup, "theorem u := 1"), 5)
    assert out.verdict is Verdict.VALID and sup.totals.kills == 0


async def test_a_gone_caller_stops_the_judge_import_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from kimina_grpc.supervisor.jobs import TrustLevel, TrustPolicy

    from .helpers.pool import pool

    # A REPL reads its import time when it starts. The judge's would import for 10 minutes, every other
    # REPL for 1 s: the next proof is answered after a replacement's import, not after the judge's,
    # however slow the machine (a bound of 5.5 s against imports of 4 s left a loaded one 1.5 s).
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "1")
    sup = pool(spec=ReplSpec(argv=ARGV), max_repls=1)
    await sup.start()
    try:
        code = "import A\ntheorem t : True := trivial"
        await asyncio.wait_for(check(sup, "import A\ntheorem warm := 1", timeout=60), 40)  # the pool's import
        sup.import_cost.value = 0.3  # waiting for the judge is not worth it
        monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "600")
        job = sup.submit(split_header(code), CheckOptions(timeout=60, trust=TrustPolicy(TrustLevel.JUDGE, theorem="t")))
        # The body is checked; the judge's REPL (a second one) imports.
        await eventually(lambda: len(stand_ins()) == 2, what="the judge's REPL started")
        monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "1")
        sup.cancel(job)
        after = await asyncio.wait_for(check(sup, "import A\ntheorem u := 1", timeout=60), 60)
        assert after.verdict is Verdict.VALID
    finally:
        await sup.close()
    assert children() == []


# ---------------------------------------------------------------- shutdown, retries, fairness


async def test_close_answers_a_job_between_its_lost_repl_and_its_retry(started: Started) -> None:
    sup = await started(max_repls=1, init_repls={"": 1})
    await warm(sup, 1)
    job = sup.submit(split_header("theorem t := 1\n-- fake: crash"), CheckOptions(timeout=10))
    await eventually(lambda: sup.totals.crashes, interval=0.005)
    await sup.close()  # the crash's retry is queued (or on its way there)
    assert (await asyncio.wait_for(job.future, 5)).verdict is Verdict.NOT_CHECKED


async def test_a_retried_proof_past_its_callers_deadline_is_not_checked(started: Started) -> None:
    slow_imports = ReplSpec(argv=ARGV, env={"KIMINA_FAKE_IMPORT_SECONDS": "2"})
    sup = await started(max_repls=1, init_repls={"import A": 1}, spec=slow_imports)
    await warm(sup, 1)
    deadline = time.monotonic() + 1.0
    code = "import A\ntheorem t := 1\n-- fake: crash"
    job = sup.submit(split_header(code), CheckOptions(timeout=10, deadline=deadline))
    out = await asyncio.wait_for(job.future, 10)  # the replacement REPL imports for 2 s: past the deadline
    assert out.verdict is Verdict.NOT_CHECKED and "deadline" in out.error


async def test_draining_refuses_new_work_as_shutting_down(started: Started) -> None:
    sup = await started(max_repls=1)
    await sup.drain(0.1)
    with pytest.raises(ShuttingDown):
        sup.submit(split_header("theorem t := 1"), CheckOptions(timeout=10))
    with pytest.raises(ShuttingDown):
        await sup.submit_when_room(split_header("theorem t := 1"), CheckOptions(timeout=10))


async def test_a_large_proof_waiting_for_room_is_not_starved_by_small_ones(started: Started) -> None:
    big, small = "theorem big := 1\n-- " + "x" * 6000, "theorem s := 1\n-- fake: sleep 0.05\n-- "
    sup = await started(max_repls=1, max_queue_bytes=8000, init_repls={"": 1})
    await warm(sup, 1)
    filler = [sup.submit(split_header(small + "y" * 1500 + str(i)), CheckOptions(timeout=10)) for i in range(4)]
    waiting_big = asyncio.ensure_future(sup.submit_when_room(split_header(big), CheckOptions(timeout=10)))
    await eventually(lambda: sup.queue.waiting_for_room == 1, what="the big one waiting for room")
    # A stream of small proofs arrives behind the big one: each would fit, but it waits its turn.
    smalls = [
        asyncio.ensure_future(sup.submit_when_room(split_header(small + str(i)), CheckOptions(timeout=10)))
        for i in range(20)
    ]
    big_job = await asyncio.wait_for(waiting_big, 10)
    assert not all(s.done() for s in smalls)  # the big one got in before the last of them
    outs = await asyncio.wait_for(asyncio.gather(big_job.future, *(j.future for j in filler)), 20)
    assert all(o.verdict is Verdict.VALID for o in outs)
    for job in await asyncio.gather(*smalls):
        assert (await asyncio.wait_for(job.future, 20)).verdict is Verdict.VALID


async def test_a_repl_sigkilled_from_outside_is_out_of_memory_after_a_retry_on_a_fresh_one(started: Started) -> None:
    """The kernel's OOM killer leaves no last words: a SIGKILL the server did not send reads as
    OUT_OF_MEMORY, and the proof gets one more try on a REPL of its own first."""
    sup = await started(max_repls=1, init_repls={"": 1})
    await warm(sup, 1)
    code = "theorem t := by\n  -- fake: sleep 30\n  trivial"
    job = sup.submit(split_header(code), CheckOptions(timeout=60))
    for attempt in (1, 2):

        def on_its_repl(attempt: int = attempt) -> list[int]:
            """The REPL running the job's `attempt`, once it took the proof (its REPL pid is known)."""
            if job.attempts != attempt:
                return []
            return [w.repl.pid for w in sup.workers() if w.job is job and w.repl is not None and w.repl.settled]

        (pid,) = await eventually(on_its_repl, what=f"attempt {attempt} on a REPL")
        os.kill(pid, signal.SIGKILL)
    out = await asyncio.wait_for(job.future, 20)
    assert out.verdict is Verdict.OUT_OF_MEMORY and out.attempts == 2 and out.fresh_repl
    assert "SIGKILL the server did not send" in out.error


async def test_without_the_box_a_daemon_a_proof_leaves_is_seen_and_killed(started: Started) -> None:
    """A double fork takes a daemon out of the REPL's tree, unless the REPL's command is a subreaper:
    then it stays in the tree, the proof's reply is not trusted, and the daemon dies with the REPL."""
    marker = f"kimina-daemon-{os.getpid()}-{time.monotonic_ns()}"
    sup = await started(max_repls=1)

    def daemons() -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter(["cmdline", "status"]):
            if marker in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p)
        return out

    try:
        out = await check(sup, f"theorem t := 1\n-- fake: daemon 60 {marker}")
        assert out.verdict is Verdict.REPL_ERROR and "started a process" in out.error
        await eventually(lambda: daemons() == [], what="the daemon killed")
        assert (await check(sup, "theorem u := 1")).verdict is Verdict.VALID
    finally:
        for p in daemons():
            p.kill()


async def test_new_repls_that_die_importing_a_header_a_warm_repl_serves_cost_no_verdict(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header a warm REPL has imported is not one that kills every REPL: when new REPLs of it die
    importing (here the OOM killer: the import needs more memory than the limit), its queued proofs
    wait for the warm REPL and get their verdicts, instead of the failed imports' crash, and the
    next new REPL backs off."""
    sup = await started(max_repls=3, init_repls={"import A": 1}, spec=ReplSpec(argv=ARGV, max_memory_bytes=400 << 20))
    await warm(sup, 1)
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_MB", "600")  # every new process dies importing
    slow = asyncio.ensure_future(check(sup, "import A\ntheorem t := by\n  -- fake: sleep 2\n  trivial"))
    await busy(sup, 1)
    queued = [check(sup, f"import A\ntheorem ok{i} := 1") for i in range(2)]
    outs = await asyncio.gather(slow, *queued)
    assert [(o.verdict, o.repl_id) for o in outs] == [(Verdict.VALID, "repl-1")] * 3
    # The new REPLs did die importing, and with the warm REPL serving the header the next start backs
    # off (1 s, doubling) instead of a new process at once, each time (dozens in these 2 s before).
    assert 2 <= sup.totals.crashes <= 4
