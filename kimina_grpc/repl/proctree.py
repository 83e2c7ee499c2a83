"""Reading a process tree from /proc: its members, their CPU time and memory, their state; psutil
where there is no /proc. Readings only: nothing here starts, owns or judges a process.

Cheap on purpose (they run after every proof): `tree_of` walks each thread's /proc children list, no
scan of every process on the machine; `ProcessTree` keeps the members psutil found (by such a scan)
until one is gone or it is asked afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import psutil

MEMORY_ACCOUNTING = "process-tree"
"""How a REPL's memory is counted (GetServerInfo, the start-up log): Repl.rss walks its process tree
afresh each time. No cgroup is made per box."""
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
PROC = os.path.isdir("/proc/self")
"""Whether this machine has a /proc to read (Linux)."""


def proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, resident bytes) of one process: /proc/PID/stat on Linux (cheap: this runs after
    every proof), psutil elsewhere."""
    if not PROC:
        p = psutil.Process(pid)
        t = p.cpu_times()
        return t.user + t.system, p.memory_info().rss
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    # After the command name: state is field 3; utime 14, stime 15, rss 24 (1-based, man 5 proc).
    return (int(fields[11]) + int(fields[12])) / _TICKS, int(fields[21]) * _PAGE


def is_stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP) or traced; False for one that is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state in (b"T", b"t")


def reset_peak(pid: int) -> bool:
    """Reset the kernel's resident high-water mark of a process (Linux >= 4.0; our own children)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "wb", buffering=0) as f:
            f.write(b"5")
    except OSError:
        return False
    return True


def peak(pid: int) -> int:
    """The process's resident high-water mark (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) << 10
    return 0


def children(pid: int) -> list[int] | None:
    """The children of every thread of the process (None when it is gone): /proc/PID/task/*/children."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    found: list[int] = []
    for tid in tids:
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
            found.extend(int(child) for child in f.read().split())
    return found


def tree_of(root: int) -> list[int]:
    """`root` and its descendants now, from each thread's /proc children list (no scan of every
    process); psutil where there is no /proc."""
    if not PROC:
        with contextlib.suppress(psutil.Error):
            return [root, *(c.pid for c in psutil.Process(root).children(recursive=True))]
        return []
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        kids = children(pid)
        if kids is None:
            continue
        found.append(pid)
        todo.extend(kids)
    return found


class ProcessTree:
    """A process and its descendants, measured. The members found last time are measured again
    (cheap: the tree of an idle REPL does not change), until one is found gone or `pids(fresh=True)`."""

    def __init__(self, root: int) -> None:
        self.root = root
        self._pids: list[int] | None = None

    def pids(self, *, fresh: bool = False) -> list[int]:
        """The root and its descendants, as found the last time (or now, when `fresh` or after a
        member was found gone); [] once the root is gone."""
        if self._pids is None or fresh:
            try:
                self._pids = [self.root, *(c.pid for c in psutil.Process(self.root).children(recursive=True))]
            except psutil.Error:
                self._pids = []
        return self._pids

    def stopped(self) -> bool:
        """Whether a process of the tree is stopped (SIGSTOP) or traced: it will not answer."""
        return any(is_stopped(pid) for pid in self.pids())

    def sample(self) -> tuple[float, int]:
        """CPU seconds and resident bytes of the tree now (one /proc read per process)."""
        cpu, rss = 0.0, 0
        for pid in self.pids():
            try:
                c, r = proc_stat(pid)
            except (OSError, psutil.Error, ValueError, IndexError):
                self._pids = None  # a member is gone: look again next time
                continue
            cpu += c
            rss += r
        return cpu, rss

    def rss(self) -> int:
        """Resident memory of the whole tree now, in bytes (0 once gone): walked afresh on each
        call, so processes started since (children of `IO.Process.spawn`) count too."""
        total = 0
        for pid in tree_of(self.root):
            with contextlib.suppress(OSError, psutil.Error, ValueError, IndexError):
                total += proc_stat(pid)[1]
        return total

    def reset_peaks(self) -> bool:
        """Reset the resident high-water mark of every process of the tree; whether all of them could
        be (then `peak` is what came after)."""
        return PROC and all([reset_peak(pid) for pid in self.pids()])

    def peak(self) -> int:
        """The tree's resident high-water marks, summed (OSError, ValueError when one is unreadable)."""
        return sum(peak(pid) for pid in self.pids())


def leaf(pids: list[int]) -> int | None:
    """The deepest process of a tree (the REPL under its wrappers: bwrap, its init, lake)."""
    depth: dict[int, int] = {}
    parents: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            parents[pid] = psutil.Process(pid).ppid()

    def level(pid: int) -> int:
        if pid not in depth:
            parent = parents.get(pid)
            depth[pid] = 0 if parent is None or parent not in parents else 1 + level(parent)
        return depth[pid]

    return max(parents, key=level) if parents else None


def processes(pids: list[int]) -> list[psutil.Process]:
    """Handles on the processes that still exist (a handle outlives pid reuse: it is safe to kill)."""
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            out.append(psutil.Process(pid))
    return out


async def gone(procs: list[psutil.Process], timeout: float) -> None:
    """Wait until the killed processes are gone (reparented ones are reaped elsewhere): `kill`
    returns when nothing of the tree runs any more."""
    deadline = time.monotonic() + timeout
    while procs and time.monotonic() < deadline:
        alive = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
        procs = alive
        if procs:
            await asyncio.sleep(0.01)
