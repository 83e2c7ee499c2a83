"""Reaping what gets reparented to the server.

`lake env repl` makes the REPL a child of lake; a proof may start processes of its own; bubblewrap's
init is a child of its outer process. When a process group is killed, the descendants of the process
we spawned are reparented to the nearest subreaper, or to PID 1, which in a container is often the
server itself: nobody waits for them, and every timeout or recycle leaves a zombie until the pod hits
its PID limit. The server makes itself a child subreaper (so this holds wherever it runs) and reaps
the children it did not spawn. Its own children are left alone: asyncio's child watcher waits for
them, and a blanket `waitpid(-1)` would steal their exit statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import psutil

from kimina_grpc.repl.wrappers import LINUX, prctl

_PR_SET_CHILD_SUBREAPER = 36
_spawned: set[int] = set()


def track(pid: int) -> None:
    """A child we spawned: asyncio waits for it, the reaper must not."""
    _spawned.add(pid)


def untrack(pid: int) -> None:
    _spawned.discard(pid)


def become_subreaper() -> bool:
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are reparented to this process."""
    return LINUX and prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _any_zombie() -> bool:
    """Whether some child has exited and waits to be reaped (peeks: reaps nothing)."""
    try:
        return os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return False


def reap_adopted(seen: set[int]) -> set[int]:
    """Reap zombie children we did not spawn; a zombie must be seen twice (one pass apart) so that a
    child spawned a moment ago, whose pid is not tracked yet, is left to its watcher. Returns the
    untracked zombies seen this pass."""
    if not _any_zombie():
        return set()
    now: set[int] = set()
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if child.pid not in _spawned and child.status() == psutil.STATUS_ZOMBIE:
                now.add(child.pid)
    for pid in now & seen:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return now - seen


async def run(interval: float = 1.0) -> None:
    """Reap adopted children every `interval` seconds until cancelled."""
    seen: set[int] = set()
    while True:
        seen = reap_adopted(seen)
        await asyncio.sleep(interval)
