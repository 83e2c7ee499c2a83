"""One Lean REPL process and its wire protocol: start, send, read, kill. Knows nothing of gRPC.

Facts that shape it (see the design notes): the REPL has no timeout and no cancel, so the only way
to stop a command is to kill the process; it may spawn children (`lake env` runs the REPL as a child),
so it runs in its own session and is killed as a process group; it writes to stderr, which must be
drained or it blocks; EOF means it died.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import termios
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn

import psutil
import structlog

from kimina_grpc.repl import reaper
from kimina_grpc.repl.bounds import MAX_ITEMS
from kimina_grpc.repl.decode import decode
from kimina_grpc.repl.protocol import BARRIER, BARRIER_REPLY, ProtocolError, Reply, ReplyRefused
from kimina_grpc.repl.sandbox import OFF, Box, Limits

log = structlog.get_logger("kimina_grpc.repl")

# The stream reader's line bound (replies are read in chunks, not lines; see `ReplSpec.max_reply_bytes`).
_READ_LIMIT = 1 << 30
# After the REPL exits, what it wrote (its reply, its last words on stderr, which tell an
# out-of-memory death from a crash) is already in its pipes: this long to read it.
_EXIT_GRACE = 0.25


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The stream protocol, telling when the process itself exits: asyncio's `Process.wait()` also
    waits until every pipe is closed, which a process the REPL started may keep from happening."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=_READ_LIMIT, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


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


class ReplyTooLarge(ReplCrashed):
    """The REPL's reply passed `ReplSpec.max_reply_bytes`: the REPL was killed before the rest of it
    was read (it cannot be skipped without reading it). The proof's own doing: the same proof would
    write the same reply again."""


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


@dataclass(frozen=True, slots=True)
class Usage:
    """What one command cost the process tree."""

    wall_seconds: float
    cpu_seconds: float
    rss_bytes: int
    """Resident memory of the process tree when the reply arrived."""
    peak_bytes: int = 0
    """Peak resident memory of the process tree during the command (the kernel's high-water mark,
    reset before the command; the resident memory at the reply where that is not available)."""


def _limited_argv(spec: ReplSpec) -> list[str]:
    """The command line: limits, parent-death signal and sandbox as exec wrappers (sandbox.py)."""
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


MEMORY_ACCOUNTING = "process-tree"
"""How a REPL's memory is counted (GetServerInfo, the start-up log): Repl.rss walks its process tree
afresh each time. No cgroup is made per box."""
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_PROC = os.path.isdir("/proc/self")


def _proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, resident bytes) of one process: /proc/PID/stat on Linux (cheap: this runs after
    every proof), psutil elsewhere."""
    if not _PROC:
        p = psutil.Process(pid)
        t = p.cpu_times()
        return t.user + t.system, p.memory_info().rss
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    # After the command name: state is field 3; utime 14, stime 15, rss 24 (1-based, man 5 proc).
    return (int(fields[11]) + int(fields[12])) / _TICKS, int(fields[21]) * _PAGE


def _reset_peak(pid: int) -> bool:
    """Reset the kernel's resident high-water mark of a process (Linux >= 4.0; our own children)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "wb", buffering=0) as f:
            f.write(b"5")
    except OSError:
        return False
    return True


def _peak(pid: int) -> int:
    """The process's resident high-water mark (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) << 10
    return 0


class Repl:
    """A running REPL process. Use `start`, then `request`/`run`, then `kill` (always)."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        exited: asyncio.Event,
        streams: tuple[asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter],
        spec: ReplSpec,
        repl_id: str,
    ) -> None:
        self.id = repl_id
        self._proc = proc
        self._exited = exited
        # Its stdin, its stdout, and the stdout socket's own end (closed with it).
        self._stdin, self._stdout, self._stdout_end = streams
        self._stdout_fd: int = self._stdout_end.get_extra_info("socket").fileno()
        self._boxed = spec.box.enabled
        self._max_reply = spec.max_reply_bytes
        self._max_items = spec.max_reply_items
        self._stderr: deque[bytes] = deque()
        self._stderr_size = 0
        self._tail_limit = spec.stderr_tail_bytes
        self._drain = asyncio.create_task(self._drain_stderr())
        self._stderr_written = 0
        self._stderr_mark = 0  # _stderr_written when the current command was sent
        self._tree: list[int] | None = None
        # Set by `settle` once the tree is complete: its processes, and the REPL process itself.
        self._known: frozenset[int] = frozenset()
        self._repl_pid: int | None = None
        self._cpu_seen = 0.0
        self._dead: ReplCrashed | None = None
        self._pending = bytearray()  # what the REPL wrote to stdout that is not yet a whole reply
        self._stdout_changed = asyncio.Event()
        self._stdout_eof = False
        self._pump = asyncio.create_task(self._pump_stdout())
        self._exit_watch = asyncio.create_task(self._watch_exit())
        self.next_env = 0
        """The id the REPL gives the next command that records an environment: every `cmd` (and
        `unpickleEnvFrom`) gets the next integer, from 0 (`recordCommandSnapshot` in REPL/Main.lean)."""

    @classmethod
    async def start(cls, spec: ReplSpec, repl_id: str) -> Repl:
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
        return cls(proc, protocol.exited, (writer, reader, from_repl_end), spec, repl_id)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._dead is None and self._proc.returncode is None

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

    def stopped(self) -> bool:
        """Whether a process of the tree is stopped (SIGSTOP) or traced: it will not answer."""
        for pid in self._pids():
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    state = f.read().rpartition(b")")[2].split()[0]
            except (OSError, IndexError):
                continue
            if state in (b"T", b"t"):
                return True
        return False

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
                while len(self._pending) <= self._max_reply and (chunk := await self._stdout.read(1 << 20)):
                    self._pending += chunk
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
        await asyncio.wait({self._pump}, timeout=_EXIT_GRACE)
        self._eof()

    async def request(self, data: bytes) -> bytes:
        """Send one encoded request and return the reply's bytes (without its blank line).

        Raises ReplCrashed, after killing the process, when it cannot be written to, on EOF, and
        when anything but exactly the REPL's own reply arrives: bytes written between replies, or
        a reply where the barrier's answer belongs (see `protocol.BARRIER`), did not come from the
        REPL's loop and must never be read as this or a later proof's reply.
        """
        if self._dead is not None:
            raise self._dead
        if self._pending:
            # Not this request's fault (it was not sent): something left behind by an earlier one.
            await self._die("the REPL wrote output between replies (not the REPL's own)")
            raise self._dead  # type: ignore[misc]
        self._stderr_mark = self._stderr_written
        try:
            sent = not (self._exited.is_set() or self._stdout_eof)
            if sent:
                self._stdin.write(data + BARRIER)
                await self._stdin.drain()
        except (ConnectionError, RuntimeError, OSError):  # uvloop: RuntimeError on a closed transport
            sent = False
        if not sent:
            # Dead before the request reached it: how it died is no business of this request's.
            await self._die("the REPL had exited before the request was sent")
            assert self._dead is not None
            self._dead.returncode = None
            self._dead.unsent = True
            raise self._dead
        raw = await self._next_reply()
        barrier = await self._next_reply()
        try:
            answered = json.loads(barrier) == BARRIER_REPLY
        except ValueError:
            answered = False
        if not answered or self._pending or not raw.strip():
            await self._forged("the REPL's reply was followed by another (not all of it the REPL's own)")
        if self._repl_pid is not None:
            await self._check_alone()
        return raw

    async def _forged(self, reason: str) -> NoReturn:
        """What came back during this request was not (all) the REPL's own."""
        await self._die(reason)
        assert self._dead is not None
        raise self._dead

    async def _check_alone(self) -> None:
        """The replies just read are the REPL's own only if the REPL is back at reading its stdin
        with nothing more written: a reply forged by a process the proof started (it inherits the
        REPL's stdout, and may read its stdin) arrives while the REPL is still at work on the
        command, and the REPL's own reply then follows it. A process the proof started that is still
        there (a daemon) could do it again, to a later proof: the REPL is not trusted with it."""
        assert self._repl_pid is not None
        deadline = time.monotonic() + _SETTLE_SECONDS
        polls = 0
        while _reading_stdin(self._repl_pid) is False:
            if self._stdout_eof or self._exited.is_set():  # an honest REPL does not exit after a reply
                await self._die("the REPL exited after its reply", exited=True)
                raise self._dead  # type: ignore[misc]
            if time.monotonic() > deadline:
                await self._forged("a reply came while the REPL was still at work (not the REPL's own)")
            # It is usually on its way to its next read already: a few turns of the loop, then naps.
            polls += 1
            await asyncio.sleep(0 if polls < 20 else min(0.02, 0.0002 * 2 ** (polls - 20)))
        # Whatever it wrote before it went back to reading is here, in the stream's buffer or in
        # the socket.
        if self._pending or len(getattr(self._stdout, "_buffer", b"")) or _unread(self._stdout_fd):
            await self._forged("the REPL's reply was followed by another (not all of it the REPL's own)")
        if (intruder := self._intruder()) is not None:
            await self._forged(
                f"the proof started a process (pid {intruder}) that was still running when its reply came"
                " (the REPL's replies cannot be told from its output)"
            )

    async def _next_reply(self) -> bytes:
        """The next reply from what stdout brought (waiting for it), without its blank line."""
        searched = 0
        while (end := self._pending.find(b"\n\n", searched)) < 0:
            if len(self._pending) > self._max_reply:
                await self._die(
                    f"the REPL's reply passed {self._max_reply:,} bytes (LEAN_SERVER_MAX_REPLY_BYTES); the REPL"
                    " was stopped before the rest of it was read (print less, or ask for a smaller infotree mode)",
                    kind=ReplyTooLarge,
                )
                raise self._dead  # type: ignore[misc]
            if self._stdout_eof:
                await self._die("the REPL exited", exited=True)
                raise self._dead  # type: ignore[misc]
            searched = max(0, len(self._pending) - 1)
            self._stdout_changed.clear()
            await self._stdout_changed.wait()
        raw = bytes(self._pending[:end])
        del self._pending[: end + 2]
        return raw

    async def run(
        self,
        data: bytes,
        *,
        measure: bool = True,
        shift: int = 0,
        records_env: bool = True,
        answered: Callable[[], None] | None = None,
        deadline: float | None = None,
    ) -> tuple[Reply, Usage]:
        """Send one encoded request; return the parsed reply (positions moved down by `shift`
        lines) and its cost (CPU and memory only when `measure`; they cost a /proc read per process).
        `answered` is called as soon as the REPL's reply is in, before it is parsed (parsing a large
        reply takes a while, and is not the REPL's time); the parse must end by `deadline`
        (time.monotonic(): what the proof's timeout leaves), or ReplyTooSlow.

        A request that records an environment (`records_env`: every `cmd`) must be answered with
        exactly the next env id, or with a REPL-level error. Raises ReplCrashed, after killing the
        process, on EOF or output that is not the REPL's reply (ReplyTooLarge past the reply bound);
        ReplyRefused (the REPL is still in step) for a reply that cannot be handed on: too deep,
        invalid, or too slow to parse.
        """
        # A REPL between commands is idle, so the sample taken after the previous command stands for
        # "before" and a command costs one sample; after an unmeasured command, take one now.
        before = self._cpu_seen
        if measure and before < 0:
            before = self.sample()[0]
        hwm = measure and _PROC and all([_reset_peak(pid) for pid in self._pids()])
        start = time.perf_counter()
        raw = await self.request(data)
        wall = time.perf_counter() - start
        if answered is not None:
            answered()
        expected = self.next_env
        try:
            reply = await decode(raw, shift, max_items=self._max_items, deadline=deadline)
        except ProtocolError as exc:
            await self._die(f"the REPL broke the protocol: {exc}")
            raise self._dead from None  # type: ignore[misc]
        except ReplyRefused:
            if records_env:
                self.next_env += 1  # the REPL recorded it all the same
            raise
        if records_env and reply.error is None:
            if reply.env != expected:
                await self._die(
                    f"the REPL broke the protocol: a reply with env {reply.env} where the REPL gives "
                    f"{expected} (not the REPL's own reply)"
                )
                raise self._dead  # type: ignore[misc]
            self.next_env += 1
        if not measure:
            self._cpu_seen = -1.0
            return reply, Usage(wall, 0.0, 0)
        cpu, rss = self.sample()
        self._cpu_seen = cpu
        peak = rss
        if hwm:
            with contextlib.suppress(OSError, ValueError):
                peak = max(rss, sum(_peak(pid) for pid in self._pids()))
        return reply, Usage(wall, max(0.0, cpu - before), rss, peak)

    async def ping(self) -> None:
        """Wait until the REPL reads requests (its box is set up); records nothing."""
        await self.request(BARRIER)

    @property
    def boxed(self) -> bool:
        return self._boxed

    async def settle(self) -> None:
        """The REPL has answered its first request: its process tree is complete (`lake env` has
        started the REPL, the box its init). Remember the tree and the REPL process: from now on
        every reply must come from it alone (see `_check_alone`)."""
        self._tree = None
        pids = self._pids()
        self._known = frozenset(pids)
        # The REPL is the one process of the tree that waits for its next request on its stdin (lake
        # waits for its child, the box's init for its own): in a moment, once it has written its
        # answer. The deepest process if the kernel cannot tell.
        deadline = time.monotonic() + _SETTLE_SECONDS
        while len(reading := [pid for pid in pids if _reading_stdin(pid)]) != 1 and time.monotonic() < deadline:
            if any(_reading_stdin(pid) is None for pid in pids):
                break
            await asyncio.sleep(0.005)
        self._repl_pid = reading[0] if len(reading) == 1 else _leaf(pids)
        if len(reading) != 1:
            _warn_once(
                "repl_not_found_reading",
                f"the REPL process could not be told from its tree ({len(reading)} processes read their stdin);"
                " the check that a reply comes from it falls back to the deepest process",
            )

    def _intruder(self) -> int | None:
        """A process in the REPL's tree that was not there when it settled (the proof's), if any.
        Reads the children of each known process's threads (cheap: no scan of every process)."""
        for pid in self._known:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                        children = f.read().split()
                except OSError:
                    continue
                for child in children:
                    if int(child) not in self._known:
                        return int(child)
        return None

    def _pids(self) -> list[int]:
        if self._tree is None:
            try:
                root = psutil.Process(self._proc.pid)
                self._tree = [self._proc.pid, *(c.pid for c in root.children(recursive=True))]
            except psutil.Error:
                self._tree = []
        return self._tree

    def sample(self) -> tuple[float, int]:
        """CPU seconds and resident bytes of the process tree now (one /proc read per process)."""
        cpu, rss = 0.0, 0
        for pid in self._pids():
            try:
                c, r = _proc_stat(pid)
            except (OSError, psutil.Error, ValueError, IndexError):
                self._tree = None  # a member is gone: look again next time
                continue
            cpu += c
            rss += r
        return cpu, rss

    def rss(self) -> int:
        """Resident memory of the whole process tree now, in bytes (0 once dead): walked afresh on
        each call, so processes a proof started since (children of `IO.Process.spawn`) count too."""
        total = 0
        for pid in _tree_of(self._proc.pid):
            with contextlib.suppress(OSError, psutil.Error, ValueError, IndexError):
                total += _proc_stat(pid)[1]
        return total

    async def _die(self, reason: str, *, exited: bool = False, kind: type[ReplCrashed] = ReplCrashed) -> None:
        """Kill the REPL for `reason` and remember why. After an EOF (`exited`) the process is on
        its way out: its own exit code (a crash, Lean's out-of-memory exit, someone else's SIGKILL)
        is waited for and kept; a REPL the server had to kill has none (the SIGKILL was ours)."""
        if exited:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), _EXIT_GRACE)
        own = self._exited.is_set()
        await self.kill()  # waits for the last words: the exit code and stderr tell an OOM from a crash
        self._dead = kind(reason, self._proc.returncode if own else None, self.stderr_since_command())

    async def kill(self) -> None:
        """SIGKILL the whole process group and reap it. Idempotent; returns once the process is gone."""
        if self._dead is None:
            self._dead = ReplCrashed("the REPL was killed", None, "")
        # Even when the leader has exited, its children may live on in its group; the box's init
        # runs in a session of its own, so every member of the tree is killed by pid too.
        self._tree = None
        tree = _processes(self._pids()[1:])
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.kill()
        await self._exited.wait()
        # Its last words, until its pipes close. A process that escaped the tree may hold them open
        # for good (and asyncio's wait() waits for the pipes), so this is bounded and then our ends
        # of the pipes are closed.
        await asyncio.wait({self._drain, self._pump}, timeout=_EXIT_GRACE)
        transport = self._proc._transport  # type: ignore[attr-defined]
        for fd in (0, 1, 2):
            pipe = transport.get_pipe_transport(fd)
            if pipe is not None:
                pipe.close()
        self._stdin.close()
        self._stdout_end.close()
        await self._proc.wait()
        reaper.untrack(self._proc.pid)
        await _gone(tree, 2.0)
        for task in (self._drain, self._pump, self._exit_watch):
            if not task.done():
                task.cancel()


# How long an honest REPL may take from writing its reply to reading its next request.
_SETTLE_SECONDS = 2.0
# The `read` system call's number, by machine, as /proc/PID/syscall shows it.
_READ_SYSCALL = {"x86_64": 0, "aarch64": 63}.get(os.uname().machine) if hasattr(os, "uname") else None


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


def _unread(fd: int) -> int:
    """Bytes waiting in the pipe `fd` reads from."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]  # type: ignore[no-any-return]
    except OSError:
        return 0


def _warn_once(event: str, text: str) -> None:
    """Log a weakened check once per process (it holds for every REPL alike)."""
    if event not in _warned:
        _warned.add(event)
        log.warning(event, reason=text)


_warned: set[str] = set()


def _leaf(pids: list[int]) -> int | None:
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


def _tree_of(root: int) -> list[int]:
    """`root` and its descendants now, from each thread's /proc children list (no scan of every
    process); psutil where there is no /proc."""
    if not _PROC:
        with contextlib.suppress(psutil.Error):
            return [root, *(c.pid for c in psutil.Process(root).children(recursive=True))]
        return []
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        found.append(pid)
        for tid in tids:
            with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                todo.extend(int(child) for child in f.read().split())
    return found


def _processes(pids: list[int]) -> list[psutil.Process]:
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            out.append(psutil.Process(pid))
    return out


async def _gone(procs: list[psutil.Process], timeout: float) -> None:
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
