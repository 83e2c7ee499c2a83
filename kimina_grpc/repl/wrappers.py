"""The exec wrappers a REPL or exporter process starts through: its resource limits, its parent-death
signal, its subreaper bit, the seccomp program handed to bubblewrap. Command-line pieces only: which
of them a process gets is the box's decision (sandbox.Box.argv).

Nothing runs in Python between fork and exec (gRPC's threads make that unsafe), so every limit is set
by an exec wrapper: util-linux's `setpriv --pdeathsig KILL` (the process dies with the server) and
`prlimit` (address space, file size, core dumps, process count). Changing uids clears the
parent-death signal, so a box started as another uid sets it again, and checks its parent again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import sys

LINUX = sys.platform.startswith("linux")
_PR_SET_DUMPABLE = 4
SECCOMP_FD = 9
"""The fd bwrap reads the seccomp program from (opened by the exec wrapper, see die_with)."""


def undumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0): /proc/PID of this process becomes root's, so a process of the same
    uid (an unboxed REPL) can neither read its environment and memory nor ptrace it."""
    if not LINUX:
        return False
    return prctl(_PR_SET_DUMPABLE, 0)


def prctl(option: int, value: int) -> bool:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return int(libc.prctl(option, value, 0, 0, 0)) == 0


def tool(name: str, why: str) -> str:
    """The path of a util-linux program (RuntimeError, saying `why` it is needed, when missing)."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{why} needs util-linux's `{name}` on PATH (apt-get install util-linux)")
    return path


def rlimits(
    address_space: int | None = None,
    file_size: int | None = None,
    processes: int | None = None,
    *,
    core: bool = True,
) -> list[str]:
    """`prlimit` setting the limits given (RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC), and no core dumps
    unless `core` is False (then the outer wrapper has already said so)."""
    # Core dumps are always off: a dump of a Mathlib REPL is gigabytes and may hold other proofs.
    args = [tool("prlimit", "limiting a REPL"), *(["--core=0"] if core else [])]
    if address_space:
        args.append(f"--as={address_space}:{address_space}")
    if file_size:
        args.append(f"--fsize={file_size}:{file_size}")
    if processes:
        args.append(f"--nproc={processes}:{processes}")
    return [*args, "--"]


def setpriv() -> list[str]:
    """`setpriv` giving the command a parent-death SIGKILL."""
    return [tool("setpriv", "a REPL that dies with the server"), "--pdeathsig", "KILL", "--"]


# Runs after the parent-death signal is set: a parent that died before that (between fork and prctl)
# would never signal, so the child checks that its parent is still the server and gives up otherwise.
_STILL_MY_PARENT = 'if [ "$PPID" != "$0" ]; then exit 137; fi; exec "$@"'
# The same, for the box: bwrap reads its seccomp program from fd 9, opened here from the file $1.
_STILL_MY_PARENT_BOXED = f'if [ "$PPID" != "$0" ]; then exit 137; fi; f=$1; shift; exec "$@" {SECCOMP_FD}<"$f"'


def die_with(server_pid: int, seccomp: str | None = None) -> list[str]:
    """Dies with the server (SIGKILL when it dies), even if it dies while this process starts. The
    box's own --die-with-parent covers the processes inside; this covers bwrap itself too. With
    `seccomp` (a file), the command gets it open on fd 9. (A file, not an inherited fd: whoever spawns
    the command needs to pass nothing.)"""
    if seccomp is None:
        return [*setpriv(), "/bin/sh", "-c", _STILL_MY_PARENT, str(server_pid)]
    return [*setpriv(), "/bin/sh", "-c", _STILL_MY_PARENT_BOXED, str(server_pid), seccomp]


def as_user(uid: int) -> list[str]:
    """Become `uid` (and its gid, no groups) before the rest runs. Changing uids clears the
    parent-death signal: it is set again, and the parent checked again."""
    drop = [tool("setpriv", "a box that is not root"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    return [*drop, *setpriv(), "/bin/sh", "-c", _STILL_MY_PARENT, str(os.getpid())]


# Without the box, a process a proof starts and orphans (a daemon's double fork) would be reparented
# to the server (a subreaper) or to init: out of the REPL's tree, where the driver looks for what a
# proof left running (ownership.Ownership). The command is made a child subreaper before it runs
# (the setting survives exec): orphans of its descendants stay in its tree. (In the box, its init
# adopts them.)
SUBREAPER = (
    sys.executable,
    "-I",
    "-S",
    "-c",
    "import ctypes, os, sys; ctypes.CDLL(None).prctl(36, 1, 0, 0, 0); os.execvp(sys.argv[1], sys.argv[1:])",
)


def through_lake(argv: list[str], death: list[str]) -> list[str]:
    """`lake env X` runs X as lake's child, and a parent-death signal is not inherited: X gets its own,
    so it dies when lake does (which dies with the server)."""
    if len(argv) >= 3 and os.path.basename(argv[0]) == "lake" and argv[1] == "env":
        return [*argv[:2], *death, *argv[2:]]
    return argv
