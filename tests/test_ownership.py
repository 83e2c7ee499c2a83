"""Whether what a REPL wrote is its own (repl/ownership.py), checked on a plain process that reads its
stdin as the REPL's loop does, and through the driver on the stand-in."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator

import pytest

from kimina_grpc.repl import Repl, ReplCrashed, ReplSpec
from kimina_grpc.repl.ownership import FOLLOWED, Breach, Ownership
from kimina_grpc.repl.process import ReplProcess
from kimina_grpc.repl.protocol import command
from kimina_grpc.testing import fake_repl_command

from .helpers import eventually

# Waits on its stdin like the REPL's loop; each line is one thing a proof could do meanwhile.
_LOOP = """
import subprocess, sys
for line in sys.stdin:
    if line.strip() == "spawn":
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    elif line.strip() == "write":
        sys.stdout.write("not a reply")
        sys.stdout.flush()
"""


@pytest.fixture
async def loop() -> AsyncIterator[ReplProcess]:
    process = await ReplProcess.start(ReplSpec(argv=(sys.executable, "-c", _LOOP)))
    try:
        yield process
    finally:
        await process.kill()


async def settled(process: ReplProcess) -> Ownership:
    ownership = Ownership()
    assert await ownership.breach(process) is None and not ownership.settled  # nothing is checked before
    await ownership.settle(process.tree.pids(fresh=True))
    assert ownership.settled and await ownership.breach(process) is None
    return ownership


async def test_a_process_the_proof_left_running_is_a_breach(loop: ReplProcess) -> None:
    ownership = await settled(loop)
    assert await loop.write(b"spawn\n")
    await eventually(lambda: len(loop.tree.pids(fresh=True)) == 2, what="the proof's process started")
    breach = await ownership.breach(loop)
    assert breach is not None and not breach.exited and f"pid {loop.tree.pids()[1]}" in breach.reason


async def test_output_after_the_reply_is_a_breach(loop: ReplProcess) -> None:
    ownership = await settled(loop)
    assert await loop.write(b"write\n")
    await eventually(loop.unread, what="the output arrived")
    assert await ownership.breach(loop) == Breach(FOLLOWED)


async def test_a_repl_that_exits_after_its_reply_is_a_breach(loop: ReplProcess) -> None:
    ownership = await settled(loop)
    os.kill(loop.pid, signal.SIGKILL)
    await loop.wait()
    breach = await ownership.breach(loop)
    assert breach is not None and breach.exited


async def test_a_settled_repl_refuses_a_reply_a_proof_forged() -> None:
    repl = await Repl.start(ReplSpec(argv=tuple(shlex.split(fake_repl_command()))), "t")
    try:
        await repl.run(command(""))
        assert not repl.settled
        await repl.settle()
        assert repl.settled
        with pytest.raises(ReplCrashed, match="REPL's own"):
            await repl.run(command("theorem t : True := by\n  -- fake: forge-reply\n  trivial", env=0))
        assert not repl.alive
    finally:
        await repl.kill()
