"""The fault soak (issue 17): a real `kimina-grpc serve` with stand-in REPLs, proofs over Verify and
several streams with a seeded mix of every stand-in fault, while the test itself kills (-9) and stops
(-STOP) idle and busy REPLs, cancels calls and stalls a stream's reader. Every id is answered once with
the verdict its directive implies, or REPL_ERROR where an injected fault explains it; the pool is back
to full strength; the server's memory, fds, threads and children are flat.

KIMINA_SOAK_PROOFS sets the number of proofs (default 600; `make soak` runs 5000 and prints the series),
KIMINA_SOAK_SEED the mix.

Which proofs an outside fault may explain is read from the stand-in's request log (KIMINA_FAKE_LOG: every
REPL logs each command it reads, with its pid): a REPL_ERROR after the server's one retry, where one of the
proof's attempts was read by a REPL the test killed or stopped, or went to a REPL that read nothing (more
attempts in the diagnostics than REPLs that read it: that REPL was already dead or stopped). Nothing else
is excused: no TIMEOUT or NOT_CHECKED, and no REPL_ERROR on a first attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
import pytest

from kimina_grpc.testing import FAKE_REPL_MODULE, serve_process
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually
from .helpers.processes import gone

pytestmark = pytest.mark.slow

PROOFS = int(os.environ.get("KIMINA_SOAK_PROOFS", "600"))
SEED = int(os.environ.get("KIMINA_SOAK_SEED", "17"))
MAX_REPLS = 3
WINDOW = 16
TIMEOUT = 3.0  # per proof: well above every directive's own cost, and what a stopped busy REPL costs
FAULT_PERIOD = 0.3
STREAMS = 4
STALLED = STREAMS - 1  # this stream's reader stops reading for a while, then resumes
HEADER = "import A"
_ID = re.compile(r"-- id (\S+)")

V = pb.Verdict
# (weight, directive, expected verdict, proof options beyond the defaults); {path} is a fresh file.
MIX: list[tuple[int, str, pb.Verdict.ValueType, dict[str, object]]] = [
    (34, "", V.VERDICT_VALID, {}),
    (10, "sleep {sleep}", V.VERDICT_VALID, {}),
    (8, "cpu {cpu}", V.VERDICT_VALID, {}),
    (5, "stderr 2000", V.VERDICT_VALID, {}),
    (3, "warning careful", V.VERDICT_VALID, {}),
    (2, "spike 32", V.VERDICT_VALID, {}),
    (3, "alloc 8", V.VERDICT_VALID, {}),  # kept until the REPL ends: a full REPL is retried fresh
    (3, "infotree-mb 0.3", V.VERDICT_VALID, {"infotree": pb.INFOTREE_MODE_FULL}),  # the decode helper
    (10, "error bad tactic", V.VERDICT_INVALID, {}),
    (8, "sorry", V.VERDICT_SORRY, {}),
    (2, "repl-error Unknown environment.", V.VERDICT_REPL_ERROR, {}),
    (2, "hang", V.VERDICT_TIMEOUT, {"timeout_seconds": 0.3}),
    (2, "crash 3", V.VERDICT_REPL_ERROR, {}),
    (3, "crash-once {path}", V.VERDICT_VALID, {}),
    (2, "garbage", V.VERDICT_REPL_ERROR, {}),
    (1, "forge-reply", V.VERDICT_REPL_ERROR, {}),
    (2, "alloc 1000", V.VERDICT_OUT_OF_MEMORY, {}),  # past LEAN_SERVER_MAX_REPL_MEM
]


@dataclass
class Planned:
    id: str
    directive: str
    expected: pb.Verdict.ValueType
    proof: pb.Proof


@dataclass
class Fault:
    at: float
    sig: str
    pid: int
    busy: bool

    def __str__(self) -> str:
        return f"{self.at:.1f}s:{self.sig[3:]}:{'busy' if self.busy else 'idle'}:{self.pid}"


@dataclass
class Run:
    started: float = field(default_factory=time.monotonic)
    answers: dict[str, list[pb.ProofResult]] = field(default_factory=dict)
    cancelled_answers: dict[str, list[pb.ProofResult]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    samples: list[tuple[float, int, int, int, int]] = field(default_factory=list)
    repls_seen: dict[int, psutil.Process] = field(default_factory=dict)
    cancelled_calls: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    """Cleared while the fault injector waits for the pool to be idle: clients send nothing new."""


def plan(rng: random.Random, prefix: str, n: int, tmp: Path) -> list[Planned]:
    weights = [w for w, *_ in MIX]
    out = []
    for i in range(n):
        _, directive, expected, opts = rng.choices(MIX, weights)[0]
        pid = f"{prefix}{i}"
        directive = directive.format(
            sleep=round(rng.uniform(0.02, 0.15), 3), cpu=round(rng.uniform(0.01, 0.05), 3), path=tmp / pid
        )
        code = f"{HEADER}\n\ntheorem t : True := by\n  -- fake: {directive}\n  -- id {pid}\n  trivial"
        options = pb.ProofOptions(diagnostics=True, **{"timeout_seconds": TIMEOUT, **opts})  # type: ignore[arg-type]
        out.append(Planned(pid, directive, expected, pb.Proof(id=pid, code=code, options=options)))
    return out


def read_log(path: Path) -> list[tuple[int, str]]:
    """(pid, proof id) of every proof command a REPL read, in order (header commands left out)."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                m = _ID.search(entry["request"].get("cmd", ""))
                if m and "env" in entry["request"]:
                    out.append((entry["pid"], m.group(1)))
    return out


def repls(server: psutil.Process) -> list[psutil.Process]:
    out = []
    for p in server.children():
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE and FAKE_REPL_MODULE in " ".join(p.cmdline()):
                out.append(p)
    return out


def live_children(server: psutil.Process) -> list[psutil.Process]:
    out = []
    for p in server.children():
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


async def sample(server: psutil.Process, run: Run) -> None:
    while True:
        with server.oneshot():
            run.samples.append(
                (
                    time.monotonic() - run.started,
                    server.memory_info().rss,
                    server.num_fds(),
                    server.num_threads(),
                    len(live_children(server)),
                )
            )
        for p in repls(server):
            run.repls_seen.setdefault(p.pid, p)
        await asyncio.sleep(0.5)  # the sampling period: a time series, not a wait for a state


def idle(p: psutil.Process) -> bool:
    """Whether the REPL waits for a command: blocked reading its stdin (a pipe, or a socket under uvloop)."""
    try:
        return Path(f"/proc/{p.pid}/wchan").read_text() in ("pipe_read", "anon_pipe_read", "unix_stream_read_generic")
    except OSError:
        return False


async def inject(server: psutil.Process, log: Path, run: Run, rng: random.Random) -> None:
    """kill -9 and kill -STOP, in turn, of an idle and of a busy REPL (idle: blocked reading its
    stdin). Every fourth turn is quiet: the clients hold back until no REPL has work, then one idle REPL
    is killed and another stopped, as the pool holds them between bursts (issue 17: 1 and 9). Only
    REPLs that have read a proof are chosen: past their import."""
    fault_kinds = [(signal.SIGKILL, False), (signal.SIGKILL, True), (signal.SIGSTOP, False), (signal.SIGSTOP, True)]
    turn = 0

    readers: set[int] = set()
    offset = 0

    def candidates() -> list[psutil.Process]:
        nonlocal offset
        with log.open("rb") as f:  # what the REPLs logged since the last look
            f.seek(offset)
            new = f.read()
        whole = new[: new.rfind(b"\n") + 1]
        offset += len(whole)
        for line in whole.splitlines():
            entry = json.loads(line)
            if "env" in entry["request"]:  # a proof, not the header
                readers.add(entry["pid"])
        faulted = {f.pid for f in run.faults}
        return [p for p in repls(server) if p.pid in readers and p.pid not in faulted]

    def hit(victim: psutil.Process, sig: signal.Signals, busy: bool) -> None:
        with contextlib.suppress(psutil.Error):
            victim.send_signal(sig)
            run.faults.append(Fault(time.monotonic() - run.started, sig.name, victim.pid, busy))

    quiet: list[psutil.Process] = []

    def all_quiet() -> bool:
        nonlocal quiet
        quiet = [p for p in candidates() if idle(p)]
        return bool(quiet) and len(quiet) >= len(candidates())

    while True:
        await asyncio.sleep(FAULT_PERIOD * rng.uniform(0.5, 1.5))  # the faults' pace: deliberate
        turn += 1
        if turn % 4 == 0:
            run.gate.clear()
            try:
                # Until no REPL has work; after 10 s, the ones idle then (a REPL the test stopped
                # stays busy until the server replaces it).
                with contextlib.suppress(AssertionError):
                    await eventually(all_quiet, timeout=10, interval=0.05)
                idle_stops = sum(f.sig == "SIGSTOP" and not f.busy for f in run.faults)
                idle_kills = sum(f.sig == "SIGKILL" and not f.busy for f in run.faults)
                signals = [signal.SIGKILL, signal.SIGSTOP][:: 1 if idle_kills <= idle_stops else -1]  # rarer first
                for victim, sig in zip(rng.sample(quiet, len(quiet)), signals, strict=False):
                    hit(victim, sig, busy=False)
            finally:
                run.gate.set()
            continue
        sig, want_busy = fault_kinds[turn % len(fault_kinds)]
        some = candidates()
        pool = [p for p in some if idle(p) != want_busy] or some
        if pool:
            victim = rng.choice(pool)
            hit(victim, sig, busy=not idle(victim))


async def verify_batches(ch: grpc.aio.Channel, batches: list[list[Planned]], run: Run) -> None:
    stub = pb_grpc.VerifierServiceStub(ch)
    for batch in batches:
        await run.gate.wait()
        reply = await stub.Verify(pb.VerifyRequest(proofs=[p.proof for p in batch]))
        assert [r.id for r in reply.results] == [p.id for p in batch], "Verify answered out of order"
        for r in reply.results:
            run.answers.setdefault(r.id, []).append(r)


async def stream(target: str, proofs: list[Planned], run: Run, *, stall: bool = False) -> None:
    options = [("grpc.http2.bdp_probe", 0)] if stall else []
    async with grpc.aio.insecure_channel(target, options=options) as ch:

        async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
            for p in proofs:
                await run.gate.wait()
                yield pb.StreamVerifyRequest(proof=p.proof)

        got = 0
        async for response in pb_grpc.VerifierServiceStub(ch).StreamVerify(requests()):
            run.answers.setdefault(response.result.id, []).append(response.result)
            got += 1
            if stall and got == len(proofs) // 3:
                await asyncio.sleep(4.0)  # reads nothing: the server's window fills and it stops reading


async def cancellers(target: str, rng: random.Random, run: Run) -> None:
    """Callers that go away: Verify calls cancelled after a short while, and a stream cancelled after
    a few answers, their proofs slow or hanging (issue 8: nobody waits for them any more)."""
    n = 0
    async with grpc.aio.insecure_channel(target) as ch:
        stub = pb_grpc.VerifierServiceStub(ch)
        while True:
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            await run.gate.wait()
            n += 1
            proofs = [
                pb.Proof(
                    id=f"x{n}-{i}",
                    code=f"{HEADER}\n\ntheorem t : True := by\n  -- fake: {d}\n  -- id x{n}-{i}\n  trivial",
                    options=pb.ProofOptions(timeout_seconds=30, diagnostics=True),
                )
                for i, d in enumerate(["sleep 0.5", "hang", "cpu 0.3", "", "sleep 2"])
            ]
            if n % 3:
                call = stub.Verify(pb.VerifyRequest(proofs=proofs))
                await asyncio.sleep(rng.uniform(0.05, 0.6))
                if call.done():
                    for r in (await call).results:
                        run.cancelled_answers.setdefault(r.id, []).append(r)
                else:
                    call.cancel()
                    run.cancelled_calls += 1
            else:

                async def requests(items: list[pb.Proof] = proofs) -> AsyncIterator[pb.StreamVerifyRequest]:
                    for p in items:
                        yield pb.StreamVerifyRequest(proof=p)
                    await asyncio.sleep(3600)  # keeps its side open until cancelled

                scall = stub.StreamVerify(requests())
                async for response in scall:
                    run.cancelled_answers.setdefault(response.result.id, []).append(response.result)
                    break  # one answer, then gone
                scall.cancel()
                run.cancelled_calls += 1


async def settle(stub: pb_grpc.VerifierServiceAsyncStub, seconds: float) -> pb.GetServerInfoResponse:
    """Wait until the pool is full, idle and has nothing queued (or `seconds` pass); its last state
    (the caller asserts on it, with the run's report)."""
    infos: list[pb.GetServerInfoResponse] = []

    async def settled() -> bool:
        infos.append(info := await stub.GetServerInfo(pb.GetServerInfoRequest()))
        return sum(h.warm for h in info.headers) == info.max_repls and info.queued == 0

    with contextlib.suppress(AssertionError):
        await eventually(settled, timeout=seconds, interval=0.2)
    return infos[-1]


def series(run: Run) -> str:
    step = max(1, len(run.samples) // 40)
    rows = (
        [*run.samples[::step], run.samples[-1]]
        if run.samples[-1] is not run.samples[::step][-1]
        else run.samples[::step]
    )
    lines = ["    t(s)  rss(MiB)  fds  threads  children"]
    lines += [f"  {t:6.1f}  {rss / 2**20:8.1f}  {fds:3d}  {th:7d}  {ch:8d}" for t, rss, fds, th, ch in rows]
    return "\n".join(lines)


def outside_death(result: pb.ProofResult) -> bool:
    """REPL_ERROR, or OUT_OF_MEMORY for a SIGKILL the server did not send (the test's kill -9 looks
    like the kernel's OOM killer, which is what the server must assume)."""
    return result.verdict == V.VERDICT_REPL_ERROR or (
        result.verdict == V.VERDICT_OUT_OF_MEMORY and "SIGKILL the server did not send" in result.error
    )


def explained(result: pb.ProofResult, readers: list[int], faulted: set[int]) -> bool:
    """Whether an outside fault explains a REPL_ERROR: the server retried the proof (a crash or a
    stopped REPL is retried once, so an innocent proof never fails on its first attempt alone) and a
    REPL that read it was killed or stopped by the test, or an attempt went to a REPL that could not
    read it (already dead or stopped: the stand-in logs every command it reads)."""
    attempts = result.diagnostics.attempts
    return attempts == 2 and (bool(set(readers) & faulted) or attempts > len(readers))


async def test_fault_soak(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    log = tmp_path / "repl-requests.log"
    env = {
        "KIMINA_FAKE_LOG": str(log),
        "LEAN_SERVER_CACHE_ENABLED": "false",  # every proof checked by a REPL
        "LEAN_SERVER_MAX_REPLS": str(MAX_REPLS),
        "LEAN_SERVER_STREAM_WINDOW": str(WINDOW),
        "LEAN_SERVER_MAX_REPL_MEM": "400M",
        "LEAN_SERVER_MAX_REPL_USES": "40",  # recycling under load too
        "LEAN_SERVER_IMPORT_COST_HINT": "0.2",
    }
    proofs = plan(rng, "p", PROOFS, tmp_path)
    routes = [rng.randrange(5) for _ in proofs]  # 0: Verify, 1..4: a stream
    by_route = [[p for p, r in zip(proofs, routes, strict=True) if r == k] for k in range(STREAMS + 1)]
    batches = [by_route[0][i : i + 40] for i in range(0, len(by_route[0]), 40)]
    run = Run()
    run.gate.set()
    with serve_process(env) as (proc, port):
        server = psutil.Process(proc.pid)
        target = f"127.0.0.1:{port}"
        async with grpc.aio.insecure_channel(target) as ch:
            stub = pb_grpc.VerifierServiceStub(ch)
            warm = [
                pb.Proof(id=f"w{i}", code=f"{HEADER}\n\n-- fake: sleep 0.2\n-- id w{i}") for i in range(MAX_REPLS * 2)
            ]
            assert {r.verdict for r in (await stub.Verify(pb.VerifyRequest(proofs=warm))).results} == {V.VERDICT_VALID}
            await settle(stub, 10)
            run.started = time.monotonic()
            background = [
                asyncio.create_task(sample(server, run)),
                asyncio.create_task(inject(server, log, run, random.Random(SEED + 1))),
                asyncio.create_task(cancellers(target, random.Random(SEED + 2), run)),
            ]
            work = [
                verify_batches(ch, batches[0::2], run),
                verify_batches(ch, batches[1::2], run),
                *(stream(target, by_route[k + 1], run, stall=k == STALLED) for k in range(STREAMS)),
            ]
            budget = 120 + PROOFS * 0.1
            try:
                await asyncio.wait_for(asyncio.gather(*work), budget)
            except TimeoutError:
                missing = sorted(p.id for p in proofs if p.id not in run.answers)
                pytest.fail(f"not all answered within {budget:.0f} s; unanswered: {missing[:50]} ({len(missing)})")
            finally:
                for task in background[1:]:
                    task.cancel()
                await asyncio.gather(*background[1:], return_exceptions=True)
            took = time.monotonic() - run.started

            # REPLs the test stopped and the server has not replaced yet are killed by it within a
            # sweep; cancelled callers' REPLs within an import's worth. Then the pool is used in full
            # once (the pool starts REPLs on demand, and one started for a single proof, as an
            # out-of-memory retry is, is not replaced) and must come back to full strength, idle.
            stopped = [f.pid for f in run.faults if f.sig == "SIGSTOP"]

            async def faults_cleared() -> bool:
                info = await stub.GetServerInfo(pb.GetServerInfoRequest())
                return all(map(gone, stopped)) and info.queued == 0 and not any(h.busy for h in info.headers)

            await eventually(faults_cleared, timeout=60, what="the stopped REPLs killed and the pool idle")
            full = [
                pb.Proof(id=f"f{i}", code=f"{HEADER}\n\n-- fake: sleep 0.3\n-- id f{i}") for i in range(MAX_REPLS * 2)
            ]
            final = await stub.Verify(pb.VerifyRequest(proofs=full))
            info = await settle(stub, 20)

            def at_rest() -> bool:
                """The pool's REPLs only: every REPL seen and retired has exited."""
                current = {p.pid for p in repls(server)}
                return len(current) == MAX_REPLS and all(gone(pid) for pid in run.repls_seen if pid not in current)

            with contextlib.suppress(AssertionError):  # the assertions below say what is left, with the report
                await eventually(at_rest, timeout=10)
            background[0].cancel()
            await asyncio.gather(background[0], return_exceptions=True)
            with server.oneshot():
                run.samples.append(
                    (
                        time.monotonic() - run.started,
                        server.memory_info().rss,
                        server.num_fds(),
                        server.num_threads(),
                        len(live_children(server)),
                    )
                )
            end_children = {c.pid: " ".join(c.cmdline()) for c in live_children(server)}

    # --- what came back
    readers: dict[str, list[int]] = {}
    for pid, proof_id in read_log(log):
        readers.setdefault(proof_id, []).append(pid)
    faulted = {f.pid for f in run.faults}
    wrong, twice, explained_ids = [], [], []
    for p in proofs:
        got = run.answers.get(p.id, [])
        if len(got) != 1:
            twice.append((p.id, [V.Name(r.verdict) for r in got]))
            continue
        r = got[0]
        if r.verdict == p.expected:
            continue
        if outside_death(r) and explained(r, readers.get(p.id, []), faulted):
            explained_ids.append(p.id)
            continue
        wrong.append(
            f"{p.id} [{p.directive}] expected {V.Name(p.expected)}, got {V.Name(r.verdict)}: {r.error[:300]!r} "
            f"(attempts {r.diagnostics.attempts}, read by {readers.get(p.id, [])})"
        )
    strays = sorted(set(run.answers) - {p.id for p in proofs})
    cancelled_twice = {k: len(v) for k, v in run.cancelled_answers.items() if len(v) != 1}

    start, end = run.samples[0], run.samples[-1]
    report = (
        f"\nsoak: {PROOFS} proofs (seed {SEED}) in {took:.1f} s; {len(run.faults)} outside faults "
        f"({sum(f.sig == 'SIGKILL' for f in run.faults)} kill -9, {sum(f.sig == 'SIGSTOP' for f in run.faults)} "
        f"kill -STOP; {sum(f.busy for f in run.faults)} of them on busy REPLs), {run.cancelled_calls} cancelled calls; "
        f"{len(explained_ids)} REPL_ERRORs or outside SIGKILLs explained by them\n"
        f"faults (time, signal, REPL state, pid): {' '.join(map(str, run.faults))}\n"
        f"verdicts: {_count(run.answers)}\n"
        f"pool: {[(h.label, h.warm, h.busy, h.starting, h.queued) for h in info.headers]} "
        f"counters {str(info.counters).replace(chr(10), ' ')}"
        f"\nchildren at the end: {list(end_children.values())}\n"
        f"server resources:\n{series(run)}"
    )
    print(report)

    assert not twice, f"ids not answered exactly once: {twice[:20]}{report}"
    assert not strays, f"answers for ids nobody sent: {strays[:20]}{report}"
    assert not wrong, f"{len(wrong)} wrong verdicts:\n" + "\n".join(wrong[:30]) + report
    assert not cancelled_twice, f"a cancelled call's id answered twice: {cancelled_twice}{report}"
    for k, got in run.cancelled_answers.items():
        assert got[0].verdict in (V.VERDICT_VALID, V.VERDICT_REPL_ERROR, V.VERDICT_TIMEOUT) or outside_death(got[0]), (
            k,
            got[0],
            report,
        )
    assert {r.verdict for r in final.results} == {V.VERDICT_VALID}, report
    kinds = {(f.sig, f.busy) for f in run.faults}
    assert len(kinds) == 4, f"not every kind of outside fault happened: {kinds}{report}"

    # The pool back to full strength, idle; no REPL that was retired lives on.
    assert [(h.warm, h.busy, h.starting, h.queued) for h in info.headers] == [(MAX_REPLS, 0, 0, 0)], report
    current = set(end_children)
    survivors = [
        pid
        for pid, p in run.repls_seen.items()
        if pid not in current and p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert not survivors, f"retired REPLs still running: {survivors}{report}"
    others = [cmd for cmd in end_children.values() if FAKE_REPL_MODULE not in cmd]
    assert len(end_children) - len(others) == MAX_REPLS, report
    assert all("kimina_grpc.repl.decode" in k for k in others) and len(others) <= 1, report

    # Flat: what the server holds at the end is what it held at the start, give or take.
    _, rss0, fds0, th0, _ = start
    _, rss1, fds1, th1, _ = end
    assert rss1 - rss0 <= 60 << 20, f"RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB{report}"
    assert fds1 - fds0 <= 20, f"fds {fds0} -> {fds1}{report}"
    assert th1 - th0 <= 4, f"threads {th0} -> {th1}{report}"


def _count(answers: dict[str, list[pb.ProofResult]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for got in answers.values():
        for r in got:
            name = V.Name(r.verdict).removeprefix("VERDICT_")
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))
