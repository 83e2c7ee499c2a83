"""The REPL driver against the stand-in: framing, every fault directive, and clean kills."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import psutil
import pytest

from kimina_grpc.repl import Repl, ReplCrashed, ReplSpec, Severity
from kimina_grpc.repl.protocol import command
from kimina_grpc.testing import fake_repl_command

from .helpers import eventually
from .helpers.processes import children
from .helpers.repl import SPEC, started


@contextlib.asynccontextmanager
async def running(spec: ReplSpec = SPEC) -> AsyncIterator[Repl]:
    """A started REPL, killed on the way out whatever the test did."""
    repl = await started(spec)
    try:
        yield repl
    finally:
        await repl.kill()


async def test_session_rule_bodies_on_the_base_env_do_not_leak() -> None:
    async with running() as repl:
        for _ in range(3):
            reply, usage = await repl.run(command("theorem same : True := trivial", env=0))
            assert reply.messages == () and reply.env is not None and reply.env > 0
            assert usage.wall_seconds >= 0 and usage.rss_bytes > 0
        # Chained on the previous env instead, the name clashes: that is what leaking looks like.
        reply, _ = await repl.run(command("theorem same : True := trivial", env=1))
        assert reply.messages[0].severity is Severity.ERROR


async def test_raw_newlines_are_escaped_on_the_wire() -> None:
    async with running() as repl:
        reply, _ = await repl.run(command("theorem a : True := by\n  -- fake: error 2 here\n  trivial", env=0))
        assert [(m.pos.line, m.data) for m in reply.messages] == [(2, "here")]


async def test_unknown_environment_is_a_repl_error_reply() -> None:
    async with running() as repl:
        reply, _ = await repl.run(command("theorem a : True := trivial", env=42))
        assert reply.error == "Unknown environment."
        assert repl.alive


@pytest.mark.parametrize(
    ("directive", "expect"),
    [
        ("crash 3", "exit code 3"),
        ("garbage", "broke the protocol"),
        ("alloc 400", "out of memory"),
    ],
)
async def test_fatal_directives_are_reported_as_crashes(directive: str, expect: str) -> None:
    spec = ReplSpec(argv=SPEC.argv, max_memory_bytes=300 << 20)
    repl = await started(spec)
    with pytest.raises(ReplCrashed) as info:
        await repl.run(command(f"theorem a : True := by\n  -- fake: {directive}\n  trivial", env=0))
    assert expect in str(info.value)
    assert not repl.alive
    assert not psutil.pid_exists(repl.pid) or psutil.Process(repl.pid).status() == psutil.STATUS_ZOMBIE
    await repl.kill()  # idempotent


async def test_stderr_flood_is_drained_and_tail_bounded() -> None:
    async with running(ReplSpec(argv=SPEC.argv, stderr_tail_bytes=4096)) as repl:
        reply, _ = await repl.run(command("-- fake: stderr 5000000\ntheorem a : True := trivial", env=0))
        assert reply.messages == ()
        await eventually(repl.stderr_tail, what="stderr read")
        assert len(repl.stderr_tail()) <= 4096 + 65536


async def test_repl_error_directive_and_lean_messages() -> None:
    async with running() as repl:
        reply, _ = await repl.run(command("-- fake: repl-error boom", env=0))
        assert reply.error == "boom"
        reply, _ = await repl.run(command("theorem b : True := by\n  -- fake: sorry", env=0))
        assert reply.sorries and reply.messages[0].data == "declaration uses `sorry`"


async def test_hang_is_killed_at_once_and_cleanly() -> None:
    repl = await started()
    task = asyncio.ensure_future(repl.run(command("-- fake: hang", env=0)))
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done
    loop = asyncio.get_running_loop()
    start = loop.time()
    await repl.kill()
    assert loop.time() - start < 2.0
    with pytest.raises(ReplCrashed):
        await task
    assert not psutil.pid_exists(repl.pid)


async def test_cpu_and_sleep_are_measured() -> None:
    async with running() as repl:
        _, usage = await repl.run(command("-- fake: cpu 0.3", env=0))
        assert usage.cpu_seconds >= 0.2
        _, usage = await repl.run(command("-- fake: sleep 0.3", env=0))
        assert usage.wall_seconds >= 0.3 and usage.cpu_seconds < 0.2


async def test_peak_memory_is_the_commands_own_high_water_mark() -> None:
    async with running() as repl:
        # 200 MiB held for an instant: gone by the reply, still in the peak.
        _, usage = await repl.run(command("theorem a : True := by\n  -- fake: spike 200\n  trivial", env=0))
        assert usage.peak_bytes >= 200 << 20 and usage.rss_bytes < 150 << 20
        # The mark is reset before each command: the next one does not inherit the spike.
        _, usage = await repl.run(command("theorem b : True := trivial", env=0))
        assert usage.peak_bytes < 150 << 20
        _, usage = await repl.run(command("theorem c : True := trivial", env=0), measure=False)
        assert usage.peak_bytes == 0


async def test_missing_binary_is_a_crash_not_an_exception_leak() -> None:
    with pytest.raises(ReplCrashed, match="cannot start"):
        await Repl.start(ReplSpec(argv=("/nonexistent/repl",)), "x")


async def test_children_of_the_repl_die_with_it() -> None:
    # A REPL run through a wrapper (like `lake env`) whose child is the real REPL.
    spec = ReplSpec(argv=("sh", "-c", f"{fake_repl_command()}; exit 0"))
    repl = await started(spec)
    await repl.settle()
    assert len(repl.tree()) >= 2
    await repl.kill()
    assert children() == []


async def test_one_thousand_start_kill_cycles_leave_nothing_behind() -> None:
    me = psutil.Process()
    fds_before = me.num_fds()
    sem = asyncio.Semaphore(8)

    async def cycle(i: int) -> None:
        async with sem:
            # `cat` speaks no JSON but costs little: what matters is start, pipes, kill, reap.
            repl = await Repl.start(ReplSpec(argv=("cat",)), f"c{i}")
            await repl.kill()

    await asyncio.gather(*(cycle(i) for i in range(1000)))
    await eventually(lambda: children() == [], what="every process reaped")
    assert me.num_fds() <= fds_before + 2, (fds_before, me.num_fds())


async def test_reply_framing_tolerates_multi_line_json() -> None:
    async with running() as repl:
        raw = await repl.request(command("theorem c : True := by\n  -- fake: warning 1 w", env=0))
        assert raw.endswith(b"}") and raw.count(b"\n") > 3  # the blank line frames it, it is not part of it
        assert json.loads(raw)["messages"][0]["data"] == "w"
