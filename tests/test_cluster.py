"""One call over several `kimina-grpc serve` processes (the stand-in REPL): spread, failover, drain,
a replica that appears, header affinity. Each server's own counters say who checked what."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimina_grpc.cli import main
from kimina_grpc.client import AsyncKiminaClient, BackendStats, ClusterOptions, InvalidArgument, Proof, Verdict
from kimina_grpc.rewards import trl_reward
from kimina_grpc.testing import serve_process

from .helpers import eventually

ROOT = Path(__file__).resolve().parent.parent
SERVER = {"LEAN_SERVER_MAX_REPLS": "4"}


@contextlib.contextmanager
def servers(n: int, env: dict[str, str] | None = None) -> Iterator[list[tuple[subprocess.Popen[str], int]]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(serve_process({**SERVER, **(env or {})})) for _ in range(n)]


@pytest.fixture(scope="module")
def three() -> Iterator[list[int]]:
    with servers(3) as procs:
        yield [port for _, port in procs]


def target_of(ports: list[int]) -> str:
    return ",".join(f"127.0.0.1:{p}" for p in ports)


def proofs(n: int, seconds: float = 0.2, header: str = "") -> list[Proof]:
    """`n` proofs, every third one wrong; a fresh nonce so no server answers from its cache."""
    nonce = uuid.uuid4().hex[:8]
    made = []
    for i in range(n):
        wrong = "\n  -- fake: error 2 boom" if i % 3 == 0 else ""
        made.append(
            Proof(f"p{i}", f"{header}theorem t{i}_{nonce} : True := trivial\n  -- fake: sleep {seconds}{wrong}")
        )
    return made


def expected(proof: Proof) -> Verdict:
    return Verdict.INVALID if "boom" in proof.code else Verdict.VALID


async def completed(port: int) -> int:
    async with AsyncKiminaClient(f"127.0.0.1:{port}") as one:
        return int((await one.server_info()).counters.completed)


async def imports(ports: list[int]) -> int:
    total = 0
    for port in ports:
        async with AsyncKiminaClient(f"127.0.0.1:{port}") as one:
            total += int((await one.server_info()).counters.imports)
    return total


def by_address(stats: list[BackendStats]) -> dict[str, BackendStats]:
    return {s.address: s for s in stats}


async def test_one_stream_fills_every_server(three: list[int]) -> None:
    before = [await completed(p) for p in three]
    batch = proofs(300)
    async with AsyncKiminaClient(target_of(three)) as client:
        results = [r async for r in client.verify_stream(batch)]
        stats = client.backends()
    assert sorted(r.id for r in results) == sorted(p.id for p in batch)
    verdicts = {r.id: r.verdict for r in results}
    assert all(verdicts[p.id] is expected(p) for p in batch)
    after = [await completed(p) for p in three]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    assert sum(s.answered for s in stats) == 300 and all(s.answered > 0 for s in stats)


async def test_one_verify_fills_every_server_and_keeps_request_order(three: list[int]) -> None:
    before = [await completed(p) for p in three]
    batch = proofs(300)
    async with AsyncKiminaClient(target_of(three)) as client:
        results = await client.verify(batch)
    assert [r.id for r in results] == [p.id for p in batch]
    assert [r.verdict for r in results] == [expected(p) for p in batch]
    after = [await completed(p) for p in three]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)


async def test_verify_over_a_cluster_refuses_what_verify_refuses(three: list[int]) -> None:
    async with AsyncKiminaClient(target_of(three)) as client:
        with pytest.raises(InvalidArgument, match=r"proofs\[1\]\.id: duplicate id 'a'"):
            await client.verify([Proof("a", "theorem x : True := trivial"), Proof("a", "theorem y : True := trivial")])
        with pytest.raises(InvalidArgument, match=r"proofs\[1\]\.id: must not be empty"):
            await client.verify([Proof("ok", "theorem x : True := trivial"), Proof("", "theorem y : True := trivial")])
        with pytest.raises(ValueError, match="already in flight"):
            [r async for r in client.verify_stream([Proof("a", "theorem x : True := trivial"), Proof("a", "x")])]
        assert [r.verdict for r in await client.verify(["theorem z : True := trivial"])] == [Verdict.VALID]


async def test_an_abandoned_or_cancelled_call_leaves_no_task_behind(three: list[int]) -> None:
    def left() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]

    async with AsyncKiminaClient(target_of(three)) as client:
        stream = client.verify_stream(proofs(60))
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]
        await eventually(lambda: not left(), what=f"tasks left after an abandoned stream: {left()}")
        call = asyncio.create_task(client.verify(proofs(60)))
        await eventually(lambda: sum(b.answered for b in client.backends()) > 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await eventually(lambda: not left(), what=f"tasks left after a cancelled verify: {left()}")
        assert [r.verdict for r in await client.verify(["theorem z : True := trivial"])] == [Verdict.VALID]


async def test_a_call_holds_at_most_max_in_flight_proofs(three: list[int]) -> None:
    taken = answered = most = 0

    def source() -> Iterator[Proof]:
        nonlocal taken, most
        for p in proofs(120, 0.05):
            taken += 1
            most = max(most, taken - answered)
            yield p

    async with AsyncKiminaClient(target_of(three), cluster=ClusterOptions(max_in_flight=10)) as client:
        async for _ in client.verify_stream(source()):
            answered += 1
    assert answered == 120 and most <= 10
    with pytest.raises(ValueError, match="max_in_flight must be at least 1"):
        ClusterOptions(max_in_flight=0)
    with pytest.raises(ValueError, match="check_every must be more than 0"):
        ClusterOptions(check_every=0)


async def test_one_reward_call_fills_every_server(three: list[int]) -> None:
    before = [await completed(p) for p in three]
    nonce = uuid.uuid4().hex[:8]
    statement = f"theorem r_{nonce} : True := by"
    completions = [f"```lean4\n{statement}\n  trivial\n  -- fake: sleep 0.2\n  -- {i}\n```" for i in range(60)]
    reward = trl_reward(target=target_of(three))
    try:
        rewards = await asyncio.to_thread(
            reward, prompts=["p"] * 60, completions=completions, formal_statement=[statement] * 60
        )
    finally:
        reward.close()
    assert rewards == [1.0] * 60, [i.reason for i in reward.last_infos][:3]
    after = [await completed(p) for p in three]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)


async def test_a_server_killed_mid_stream_loses_nothing_and_answers_nothing_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kimina_grpc.client")
    with servers(3) as procs:
        victim_proc, victim_port = procs[0]
        victim = f"127.0.0.1:{victim_port}"
        batch = proofs(300)
        seen: list[str] = []
        async with AsyncKiminaClient(target_of([p for _, p in procs])) as client:
            async for result in client.verify_stream(batch):
                seen.append(result.id)
                assert result.verdict is expected(batch[int(result.id[1:])])
                if victim_proc.poll() is None and by_address(client.backends())[victim].answered >= 20:
                    victim_proc.kill()
            stats = by_address(client.backends())
    assert len(seen) == 300 and len(set(seen)) == 300
    assert stats[victim].state == "down" and stats[victim].resent > 0
    said = [r.getMessage() for r in caplog.records if r.name == "kimina_grpc.client"]
    assert sum(m.startswith(f"backend lost: {victim} ") for m in said) == 1  # once, however often it is seen down
    assert sorted(m.split()[2] for m in said if m.startswith("backend joined")) == sorted(stats)
    # Only what was unanswered went again: every answer counted once, every re-send accounted for.
    assert sum(s.answered for s in stats.values()) == 300
    assert sum(s.sent for s in stats.values()) == 300 + sum(s.resent for s in stats.values())


async def test_verify_after_a_server_dies_resends_only_the_unanswered() -> None:
    with servers(3) as procs:
        victim_proc, victim_port = procs[0]
        victim = f"127.0.0.1:{victim_port}"
        async with AsyncKiminaClient(target_of([p for _, p in procs])) as client:
            call = asyncio.create_task(client.verify(proofs(300)))
            await eventually(
                lambda: (
                    by_address(client.backends()).get(victim, None)
                    and by_address(client.backends())[victim].answered >= 20
                )
            )
            victim_proc.kill()
            results = await call
            stats = by_address(client.backends())
    assert len({r.id for r in results}) == 300
    assert stats[victim].resent > 0
    assert sum(s.answered for s in stats.values()) == 300  # none re-checked after its answer came back
    assert sum(s.sent for s in stats.values()) == 300 + sum(s.resent for s in stats.values())


async def test_a_draining_server_gets_no_new_proofs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kimina_grpc.client")
    with servers(3, {"LEAN_SERVER_DRAIN_SECONDS": "30"}) as procs:
        drained_proc, drained_port = procs[0]
        drained = f"127.0.0.1:{drained_port}"
        batch = proofs(300)
        seen: list[str] = []
        sent_when_seen: int | None = None
        async with AsyncKiminaClient(target_of([p for _, p in procs])) as client:
            async for result in client.verify_stream(batch):
                seen.append(result.id)
                mine = by_address(client.backends())[drained]
                if len(seen) == 30:
                    drained_proc.send_signal(signal.SIGTERM)
                if sent_when_seen is None and mine.state != "ready":
                    sent_when_seen = mine.sent
            stats = by_address(client.backends())
    assert len(seen) == 300 and len(set(seen)) == 300
    assert sent_when_seen is not None
    assert stats[drained].sent == sent_when_seen  # nothing new once it said NOT_SERVING
    assert all(s.answered > 0 for s in stats.values())
    said = [r.getMessage() for r in caplog.records if r.name == "kimina_grpc.client"]
    assert sum(m.startswith(f"backend draining: {drained} ") for m in said) <= 1
    assert any(m.startswith((f"backend draining: {drained} ", f"backend lost: {drained} ")) for m in said)


async def test_the_first_call_waits_for_a_server_still_pre_warming() -> None:
    """A fresh client's first call does not fill whoever was ready first: a reachable server still
    importing its pre-warm header (1 s) gets its share of a call that would end before it is ready.
    The call waits for it at most `ready_wait` (5 s by default): 30 here, as the REPL's start before
    its import may take seconds on a loaded machine."""
    warming = {"LEAN_SERVER_INIT_REPLS": '{"import Mathlib.Slow": 1}', "KIMINA_FAKE_IMPORT_SECONDS": "1"}
    with servers(1) as ready, servers(1, warming) as late:
        slow = f"127.0.0.1:{late[0][1]}"
        options = ClusterOptions(ready_wait=30)
        async with AsyncKiminaClient(target_of([ready[0][1], late[0][1]]), cluster=options) as client:
            assert len([r async for r in client.verify_stream(proofs(20, 0.01))]) == 20
            stats = by_address(client.backends())
    assert stats[slow].answered > 0


async def test_a_server_that_appears_in_dns_gets_work(three: list[int]) -> None:
    known = [f"127.0.0.1:{p}" for p in three[:2]]
    newcomer = f"127.0.0.1:{three[2]}"
    options = ClusterOptions(resolve=lambda host, port: list(known), resolve_every=0.2)
    batch = proofs(300)
    async with AsyncKiminaClient("dns:///kimina.test:50051", cluster=options) as client:
        async for result in client.verify_stream(batch):
            if result.id == "p30":
                known.append(newcomer)
        stats = by_address(client.backends())
    assert set(stats) == {*known}
    assert stats[newcomer].answered > 0


async def test_header_affinity_imports_each_header_once_plus_spill() -> None:
    """3 headers interleaved over 3 servers of one REPL each: with affinity each server keeps one
    header warm (imports: one per header, plus what spilled). How many more imports the cluster pays
    without affinity depends on timing (a slow client finds every window empty, and the shortest
    queue's tie-break is the header's ranking), so that comparison is `python -m bench cluster`'s."""

    headers = [f"import Mathlib.H{i}\n\n" for i in range(3)]
    batch = [p for group in zip(*(proofs(30, 0.05, h) for h in headers), strict=True) for p in group]
    batch = [Proof(f"q{i}", p.code) for i, p in enumerate(batch)]
    with servers(3, {"LEAN_SERVER_MAX_REPLS": "1"}) as procs:
        ports = [port for _, port in procs]
        start = await imports(ports)
        async with AsyncKiminaClient(target_of(ports), cluster=ClusterOptions(affinity=True)) as client:
            assert len([r async for r in client.verify_stream(batch)]) == len(batch)
            spilled = sum(s.spilled for s in client.backends())
        with_affinity = await imports(ports) - start
    assert 3 <= with_affinity <= 3 + 2 * spilled, (with_affinity, spilled)  # a spill may cost its import and one back


def test_kimina_grpc_bench_spreads_and_reports_per_backend_counts(
    three: list[int], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = tmp_path / "proofs.jsonl"
    data.write_text("".join(json.dumps({"id": p.id, "code": p.code}) + "\n" for p in proofs(90)))
    out = tmp_path / "report"
    assert main(["bench", "--dataset", str(data), "--output", str(out), "--target", target_of(three)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["proofs"] == 90
    assert sorted(report["backends"]) == sorted(f"127.0.0.1:{p}" for p in three)
    assert all(b["answered"] > 0 for b in report["backends"].values())
    assert sum(b["answered"] for b in report["backends"].values()) == 90
    assert all(f"backend 127.0.0.1:{p}: " in printed for p in three)


def test_failover_leaves_no_pending_task_at_exit() -> None:
    """A user's script: the sync client, a server killed mid-stream, exit without closing."""
    script = textwrap.dedent(
        """
        import contextlib
        from kimina_grpc.client import KiminaClient, KiminaError, Proof
        from kimina_grpc.testing import serve_process

        with contextlib.ExitStack() as stack:
            procs = [stack.enter_context(serve_process({"LEAN_SERVER_MAX_REPLS": "2"})) for _ in range(2)]
            client = KiminaClient(",".join(f"127.0.0.1:{port}" for _, port in procs))
            batch = [Proof(f"p{i}", f"theorem t{i} : True := trivial\\n  -- fake: sleep 0.1") for i in range(100)]
            got = []  # 100 proofs: more than a window, so the request generator waits when a server dies
            for r in client.verify_stream(batch):
                got.append(r.id)
                if len(got) == 10:  # kill a server that is checking this stream's proofs
                    for proc, port in procs:
                        with KiminaClient(f"127.0.0.1:{port}") as one:
                            if one.server_info().counters.completed:
                                proc.kill()
                                break
            got += [r.id for r in client.verify(batch[:30])]
            print("answers", len(got), len(set(got)))
            single = KiminaClient(f"127.0.0.1:{procs[1][1]}", max_attempts=2)  # one address: no one to fail over to
            try:
                for i, r in enumerate(single.verify_stream([Proof(f"s{p.id}", p.code) for p in batch])):
                    if i == 10:
                        procs[1][0].kill()
            except KiminaError as exc:
                print("single:", exc.code.name)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "answers 130 100" in done.stdout and "single: UNAVAILABLE" in done.stdout
    assert "Task was destroyed" not in done.stderr, done.stderr[-2000:]
