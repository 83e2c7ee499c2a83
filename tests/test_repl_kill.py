"""Killing a REPL signals its own processes only, however often it is killed: a REPL that died is
killed again by whoever retires it, and by then its pid may be another process's (pid reuse)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import psutil
import pytest

from kimina_grpc.repl import Repl, ReplSpec

from .helpers import eventually

_LAST_PID = "/proc/sys/kernel/ns_last_pid"
# A process of someone else's in a session of its own (its pid is its group's id), with a child that
# echoes what it reads: its answer after the REPL's kill says the kill spared both.
_STRANGER = "import subprocess, sys; sys.exit(subprocess.call(['cat']))"


def _take(pid: int) -> subprocess.Popen[bytes] | None:
    """Start the stranger with `pid` (the kernel hands out the pid after ns_last_pid), or None when
    other processes of the machine keep taking it first."""
    for _ in range(200):
        if psutil.pid_exists(pid):
            return None
        with open(_LAST_PID, "w") as f:
            f.write(str(pid - 1))
        stranger = subprocess.Popen(
            [sys.executable, "-c", _STRANGER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        if stranger.pid == pid:
            return stranger
        stranger.kill()
        stranger.wait()
    return None


@pytest.mark.skipif(not os.access(_LAST_PID, os.W_OK), reason="the next pid cannot be chosen here (needs root)")
async def test_a_second_kill_spares_the_process_that_took_the_dead_repls_pid() -> None:
    repl = await Repl.start(ReplSpec(argv=("cat",)), "k")
    pid = repl.pid
    await repl.kill()  # killed and reaped: its pid is free
    stranger = _take(pid)
    if stranger is None:
        pytest.skip(f"pid {pid} was taken by another process first")
    try:
        await eventually(lambda: psutil.Process(pid).children() != [], what="the stranger's child started")
        await repl.kill()  # as the retire after a crash does
        assert _answers(stranger), "the second kill killed the process that took the REPL's pid"
    finally:
        kids = psutil.Process(pid).children() if stranger.poll() is None else []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # its group's id is its pid: it is not reaped yet
        stranger.communicate()  # reaps it and closes its pipes
        psutil.wait_procs(kids)


def _answers(stranger: subprocess.Popen[bytes]) -> bool:
    """Whether the stranger's child still echoes (a process that was sent SIGKILL runs no more)."""
    assert stranger.stdin is not None and stranger.stdout is not None
    try:
        stranger.stdin.write(b"still here\n")
        stranger.stdin.flush()
    except BrokenPipeError:
        return False
    return stranger.stdout.readline() == b"still here\n"
