"""The REPL's operating-system process: started under its limits and box, its stderr drained, its
stdout pumped, its exit watched, its tree measured and killed. Knows nothing of the protocol.

Facts that shape it (see the design notes): the REPL has no timeout and no cancel, so the only way
to stop a command is to kill the process; it may spawn children (`lake env` runs the REPL as a child),
so it runs in its own session and is killed as a process group; it writes to stderr, which must be
drained or it blocks; EOF means it died.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import struct
import termios
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import psutil

from kimina_grpc.repl import proctree, reaper
from kimina_grpc.repl.bounds import MAX_ITEMS
from kimina_grpc.repl.sandbox import OFF, Box, Limits

# The stream reader's line bound (replies are read in chunks, not lines; see `ReplSpec.max_reply_bytes`).
_READ_LIMIT = 1 << 30
EXIT_GRACE = 0.25
"""After the REPL exits, what it wrote (its reply, its last words on stderr, which tell an
out-of-memory death from a crash) is already in its pipes: this long to read it."""


class ReplCrashed(Exception):
    """The process died or broke the protocol; it has been killed and reaped."""

    def __init__(self, reason: str, returncode: int | None, stderr: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.returncode = returncode
        self.stderr = stderr
        self.unsent = False
        """The REPL was dead before the request reached it: how it died is not this request's doing."""

    def __str__(self) -> str:
        text = self.reason
        if self.returncode is not None:
            text += f" (exit code {self.returncode})"
        if self.stderr:
            text += f"; stderr: {self.stderr.strip()[-2000:]}"
        return text


@dataclass(frozen=True, slots=True)
class ReplSpec:
    """How to start a REPL process."""

    argv: tuple[str, ...]
    cwd: str | None = None
    env: Mapping[str, str] | None = None
    max_memory_bytes: int | None = None
    """Address-space cap (RLIMIT_AS) of the process and its children; Linux only."""
    stderr_tail_bytes: int = 16_384
    box: Box = OFF
    """The sandbox (bubblewrap) or none; the environment is its allow-list either way."""
    max_file_bytes: int | None = None
    """RLIMIT_FSIZE of the process and its children."""
    max_processes: int | None = None
    """RLIMIT_NPROC (per user id, see sandbox.Limits)."""
    max_reply_bytes: int = 1 << 30
    """The largest reply read: a REPL writing more is killed (ReplyTooLarge)."""
    max_reply_items: int = MAX_ITEMS
    """Messages (sorries, tactics) kept per reply; the rest are counted (see bounds.bound)."""


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The stream protocol, telling when the process itself exits: asyncio's `Process.wait()` also
    waits until every pipe is closed, which a process the REPL started may keep from happening."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=_READ_LIMIT, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


def _limited_argv(spec: ReplSpec) -> list[str]:
    """The command line: limits, parent-death signal and sandbox as exec wrappers (Box.argv, wrappers.py)."""
    limits = Limits(spec.max_memory_bytes, spec.max_file_bytes, spec.max_processes)
    return spec.box.argv(spec.argv, cwd=spec.cwd, limits=limits)


def _missing(argv0: str, cwd: str | None, env: Mapping[str, str]) -> str | None:
    """Why the program cannot be found, checked before the wrappers would hide it behind their exit."""
    if os.sep in argv0:
        path = argv0 if os.path.isabs(argv0) or cwd is None else os.path.join(cwd, argv0)
        return None if os.access(path, os.X_OK) else f"{path}: no such executable file"
    if shutil.which(argv0, path=env.get("PATH", os.defpath)) is None:
        return f"{argv0}: not found on PATH ({env.get('PATH', os.defpath)})"
    return None


class ReplProcess:
    """A running REPL process and what it writes. Use `start`, then `write` and `pending`, then
    `kill` (always). Its stdout is read as it comes into `pending`, between replies too: what the
    protocol makes of it is the driver's."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        exited: asyncio.Event,
        streams: tuple[asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter],
        spec: ReplSpec,
    ) -> None:
        self._proc = proc
        self._exited = exited  # the process itself has exited (its pipes may still be open)
        # Its stdin, its stdout, and the stdout socket's own end (closed with it).
        self._stdin, self._stdout, self._stdout_end = streams
        self._stdout_fd: int = self._stdout_end.get_extra_info("socket").fileno()
        self._max_pending = spec.max_reply_bytes
        self._stderr: deque[bytes] = deque()
        self._stderr_size = 0
        self._tail_limit = spec.stderr_tail_bytes
        self._stderr_written = 0
        self._stderr_mark = 0  # _stderr_written when the current command was sent
        self.tree = proctree.ProcessTree(proc.pid)
        """Its process tree: what it and its wrappers started, measured."""
        self.pending = bytearray()
        """What the REPL wrote to stdout that is not yet taken (as a whole reply) by the driver."""
        self._stdout_changed = asyncio.Event()
        self._stdout_eof = False
        self._drain = asyncio.create_task(self._drain_stderr())
        self._pump = asyncio.create_task(self._pump_stdout())
        self._exit_watch = asyncio.create_task(self._watch_exit())

    @classmethod
    async def start(cls, spec: ReplSpec) -> ReplProcess:
        """Start the process under its limits and box; ReplCrashed when it cannot be started."""
        env = spec.box.environ(spec.env)
        missing = _missing(spec.argv[0], spec.cwd, env) if spec.argv else "empty command line"
        if missing:
            raise ReplCrashed(f"cannot start the REPL: {missing}", None, "")
        loop = asyncio.get_running_loop()
        # The protocol goes over sockets, not pipes: a pipe's end can be opened again, in either
        # direction, through /proc/PID/fd/N by anything the proof starts (to steal the REPL's
        # replies, or to write into its requests); a socket's cannot. Each carries one direction.
        to_repl, repl_in = socket.socketpair()
        from_repl, repl_out = socket.socketpair()
        to_repl.shutdown(socket.SHUT_RD)  # what the REPL's side writes into its stdin goes nowhere
        from_repl.shutdown(socket.SHUT_WR)  # and reading its stdout gets nothing
        try:
            # Our ends are wired first: once the process exists, nothing may stop before it is ours
            # to kill (a cancel in between would leave it running).
            _, writer = await asyncio.open_connection(sock=to_repl, limit=_READ_LIMIT)
            reader, from_repl_end = await asyncio.open_connection(sock=from_repl, limit=_READ_LIMIT)
            transport, protocol = await loop.subprocess_exec(
                lambda: _Protocol(loop),
                *_limited_argv(spec),
                stdin=repl_in.fileno(),
                stdout=repl_out.fileno(),
                stderr=asyncio.subprocess.PIPE,
                cwd=spec.cwd,
                env=env,
                start_new_session=True,  # its own process group: killed as one
            )
        except BaseException as exc:
            to_repl.close()
            from_repl.close()
            if isinstance(exc, OSError | RuntimeError):
                raise ReplCrashed(f"cannot start the REPL: {exc}", None, "") from None
            raise
        finally:
            repl_in.close()
            repl_out.close()
        proc = asyncio.subprocess.Process(transport, protocol, loop)
        reaper.track(proc.pid)
        return cls(proc, protocol.exited, (writer, reader, from_repl_end), spec)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    @property
    def has_exited(self) -> bool:
        """The process itself has exited (something it started may still hold its pipes open)."""
        return self._exited.is_set()

    @property
    def stdout_ended(self) -> bool:
        """Its stdout ended (or the process exited a moment ago): what is in `pending` is all there is."""
        return self._stdout_eof

    @property
    def ended(self) -> bool:
        """The process exited, or its stdout ended: no more replies will come."""
        return self._exited.is_set() or self._stdout_eof

    async def more_output(self) -> None:
        """Wait until `pending` grows or stdout ends (whatever was there when called is not news)."""
        self._stdout_changed.clear()
        await self._stdout_changed.wait()

    async def write(self, data: bytes) -> bool:
        """Send `data` to its stdin, starting a new command (see `stderr_since_command`); False when
        the process could not be written to (it had exited)."""
        self._stderr_mark = self._stderr_written
        try:
            if self.ended:
                return False
            self._stdin.write(data)
            await self._stdin.drain()
        except (ConnectionError, RuntimeError, OSError):  # uvloop: RuntimeError on a closed transport
            return False
        return True

    def unread(self) -> int:
        """Bytes it wrote to stdout that are not a taken reply: in `pending`, in the stream's buffer
        or still in the socket."""
        buffered = len(getattr(self._stdout, "_buffer", b""))
        try:
            waiting: int = struct.unpack("i", fcntl.ioctl(self._stdout_fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            waiting = 0
        return len(self.pending) + buffered + waiting

    def stderr_tail(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def stderr_since_command(self) -> str:
        """What the REPL wrote to stderr since the current (or last) command was sent: a crash
        report names only what its own proof caused."""
        new = self._stderr_written - self._stderr_mark
        tail = b"".join(self._stderr)
        return tail[max(0, len(tail) - new) :].decode(errors="replace") if new > 0 else ""

    async def wait(self) -> int | None:
        """Wait for the process to exit (for whatever reason); its exit code. Returns when the
        process is gone, even while something it started still holds its pipes open."""
        await self._exited.wait()
        return self._proc.returncode

    async def _drain_stderr(self) -> None:
        assert self._proc.stderr is not None
        with contextlib.suppress(Exception):
            while chunk := await self._proc.stderr.read(65536):
                self._stderr.append(chunk)
                self._stderr_size += len(chunk)
                self._stderr_written += len(chunk)
                while self._stderr_size - len(self._stderr[0]) >= self._tail_limit:
                    self._stderr_size -= len(self._stderr.popleft())

    async def _pump_stdout(self) -> None:
        """Read stdout as it comes, between replies too: what arrives while no request is pending
        was not written by the REPL's loop and must be seen, not read as the next reply."""
        try:
            with contextlib.suppress(Exception):
                while len(self.pending) <= self._max_pending and (chunk := await self._stdout.read(1 << 20)):
                    self.pending += chunk
                    self._stdout_changed.set()
        finally:  # cancelled too: whoever waits for a reply must learn there will be none
            self._eof()

    def _eof(self) -> None:
        self._stdout_eof = True
        self._stdout_changed.set()

    async def _watch_exit(self) -> None:
        """The REPL exited: what it wrote arrives within a moment. A process it started that escaped
        its tree (a double fork, `setsid`) may hold its stdout open for good, so a reply still
        awaited after that moment will never come."""
        await self._exited.wait()
        await asyncio.wait({self._pump}, timeout=EXIT_GRACE)
        self._eof()

    async def kill(self) -> None:
        """SIGKILL the whole process group and reap it. Idempotent; returns once the process is gone."""
        # Even when the leader has exited, its children may live on in its group; the box's init
        # runs in a session of its own, so every member of the tree is killed by pid too. Once the
        # leader is reaped (a second kill, a REPL that exited) its pid may be another process's: its
        # tree is gone (its children were reparented), and its group, while a member lives, keeps
        # the pid from being reused, so a process that has the pid now is not of this group.
        reaped = self._proc.returncode is not None
        tree = [] if reaped else proctree.processes(self.tree.pids(fresh=True)[1:])
        if not reaped or not psutil.pid_exists(self._proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.kill()
        try:
            await self._exited.wait()
            # Its last words, until its pipes close. A process that escaped the tree may hold them
            # open for good (and asyncio's wait() waits for the pipes), so this is bounded and then
            # our ends of the pipes are closed.
            await asyncio.wait({self._drain, self._pump}, timeout=EXIT_GRACE)
        finally:
            # Cancelled too (a server closing): else, held open, they keep the process's transport
            # open past its loop, and it fails when collected ("Event loop is closed").
            self._close_pipes()
        await self._proc.wait()
        reaper.untrack(self._proc.pid)
        await proctree.gone(tree, 2.0)
        for task in (self._drain, self._pump, self._exit_watch):
            if not task.done():
                task.cancel()

    def _close_pipes(self) -> None:
        """Close our ends of its stdin, stdout and stderr."""
        transport = self._proc._transport  # type: ignore[attr-defined]
        for fd in (0, 1, 2):
            pipe = transport.get_pipe_transport(fd)
            if pipe is not None:
                pipe.close()
        self._stdin.close()
        self._stdout_end.close()
