"""Whether a reply is the REPL's own: the checks that tell the REPL's loop from a process the proof
started that writes into the REPL's stdout (it inherits it, and may read its stdin).

Once the REPL has answered its first request its process tree is complete (`lake env` has started the
REPL, the box its init): `settle` remembers the tree and which of its processes is the REPL. From then
on a reply is the REPL's own only if, once it is read, the REPL is back at reading its stdin with
nothing more written and no process of the proof's still running (`breach`). The kernel tells where a
process waits through /proc/PID/syscall; where it does not, the check is weaker and the log says so.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import structlog

from kimina_grpc.repl import proctree
from kimina_grpc.repl.process import ReplProcess

log = structlog.get_logger("kimina_grpc.repl")

# How long an honest REPL may take from writing its reply to reading its next request.
_SETTLE_SECONDS = 2.0
# The `read` system call's number, by machine, as /proc/PID/syscall shows it.
_READ_SYSCALL = {"x86_64": 0, "aarch64": 63}.get(os.uname().machine) if hasattr(os, "uname") else None


@dataclass(frozen=True, slots=True)
class Breach:
    """Why the replies just read cannot be taken for the REPL's own."""

    reason: str
    exited: bool = False
    """The REPL exited (rather than wrote what is not its own): its exit code is worth waiting for."""


FOLLOWED = "the REPL's reply was followed by another (not all of it the REPL's own)"
"""More came after a reply than the REPL writes (its barrier's answer, see protocol.BARRIER)."""


class Ownership:
    """Which process of a REPL's tree is the REPL, and whether what it just wrote was its own."""

    def __init__(self) -> None:
        self._known: frozenset[int] = frozenset()
        self._repl_pid: int | None = None

    @property
    def settled(self) -> bool:
        """`settle` has run: replies are checked from now on."""
        return self._repl_pid is not None

    async def settle(self, pids: list[int]) -> None:
        """The REPL has answered its first request and `pids` is its tree now: remember it, and the
        REPL process itself."""
        self._known = frozenset(pids)
        # The REPL is the one process of the tree that waits for its next request on its stdin (lake
        # waits for its child, the box's init for its own): in a moment, once it has written its
        # answer. The deepest process if the kernel cannot tell.
        deadline = time.monotonic() + _SETTLE_SECONDS
        while len(reading := [pid for pid in pids if _reading_stdin(pid)]) != 1 and time.monotonic() < deadline:
            if any(_reading_stdin(pid) is None for pid in pids):
                break
            await asyncio.sleep(0.005)
        self._repl_pid = reading[0] if len(reading) == 1 else proctree.leaf(pids)
        if len(reading) != 1:
            _warn_once(
                "repl_not_found_reading",
                f"the REPL process could not be told from its tree ({len(reading)} processes read their stdin);"
                " the check that a reply comes from it falls back to the deepest process",
            )

    async def breach(self, process: ReplProcess) -> Breach | None:
        """Why the replies just read are not (all) the REPL's own, or None. They are its own only if
        the REPL is back at reading its stdin with nothing more written: a reply forged by a process
        the proof started arrives while the REPL is still at work on the command, and the REPL's own
        reply then follows it. A process the proof started that is still there (a daemon) could do
        it again, to a later proof: the REPL is not trusted with it. Nothing to check before `settle`."""
        if self._repl_pid is None:
            return None
        deadline = time.monotonic() + _SETTLE_SECONDS
        polls = 0
        while _reading_stdin(self._repl_pid) is False:
            if process.ended:  # an honest REPL does not exit after a reply
                return Breach("the REPL exited after its reply", exited=True)
            if time.monotonic() > deadline:
                return Breach("a reply came while the REPL was still at work (not the REPL's own)")
            # It is usually on its way to its next read already: a few turns of the loop, then naps.
            polls += 1
            await asyncio.sleep(0 if polls < 20 else min(0.02, 0.0002 * 2 ** (polls - 20)))
        # Whatever it wrote before it went back to reading is here, in the stream's buffer or in
        # the socket.
        if process.unread():
            return Breach(FOLLOWED)
        if (intruder := self._intruder()) is not None:
            return Breach(
                f"the proof started a process (pid {intruder}) that was still running when its reply came"
                " (the REPL's replies cannot be told from its output)"
            )
        return None

    def _intruder(self) -> int | None:
        """A process in the REPL's tree that was not there when it settled (the proof's), if any.
        Reads the children of each known process's threads (cheap: no scan of every process)."""
        for pid in self._known:
            for child in proctree.children(pid) or ():
                if child not in self._known:
                    return child
        return None


def _reading_stdin(pid: int) -> bool | None:
    """Whether the process's main thread is blocked reading its stdin (fd 0): where the REPL's loop
    waits for its next request. False for a process that is gone; None when the kernel does not
    tell (then nothing is checked, said once in the log)."""
    if _READ_SYSCALL is None:
        _warn_once("syscall_check_off", f"no read syscall number known for {os.uname().machine}")
        return None
    try:
        with open(f"/proc/{pid}/syscall", "rb") as f:
            fields = f.read().split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError as exc:
        _warn_once("syscall_check_off", f"/proc/PID/syscall cannot be read ({exc})")
        return None
    if not fields or fields[0] == b"running" or len(fields) < 2:
        return False
    try:
        return int(fields[0]) == _READ_SYSCALL and int(fields[1], 16) == 0
    except ValueError:
        return None


def _warn_once(event: str, text: str) -> None:
    """Log a weakened check once per process (it holds for every REPL alike)."""
    if event not in _warned:
        _warned.add(event)
        log.warning(event, reason=text)


_warned: set[str] = set()
