"""A conversation with one Lean REPL: requests framed by the wire protocol, replies read back, checked
to be the REPL's own and parsed. Knows nothing of gRPC.

The REPL is an operating-system process (process.py: start, pump, kill, measure) whose replies are
checked against what the proof might forge (ownership.py); `Repl` holds the protocol on top: one
request and its barrier out, one reply and the barrier's answer back, the env ids the REPL hands out,
the reply's size bound, and what a command cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from kimina_grpc.repl import proctree
from kimina_grpc.repl.decode import decode
from kimina_grpc.repl.ownership import FOLLOWED, Ownership
from kimina_grpc.repl.process import EXIT_GRACE, ReplCrashed, ReplProcess, ReplSpec
from kimina_grpc.repl.protocol import BARRIER, BARRIER_REPLY, ProtocolError, Reply, ReplyRefused

__all__ = ["Repl", "ReplCrashed", "ReplSpec", "ReplyTooLarge", "Usage"]


class ReplyTooLarge(ReplCrashed):
    """The REPL's reply passed `ReplSpec.max_reply_bytes`: the REPL was killed before the rest of it
    was read (it cannot be skipped without reading it). The proof's own doing: the same proof would
    write the same reply again."""


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


class Repl:
    """A running REPL. Use `start`, then `request`/`run`, then `kill` (always)."""

    def __init__(self, process: ReplProcess, spec: ReplSpec, repl_id: str) -> None:
        self.id = repl_id
        self._process = process
        self._ownership = Ownership()
        self._boxed = spec.box.enabled
        self._max_reply = spec.max_reply_bytes
        self._max_items = spec.max_reply_items
        self._cpu_seen = 0.0
        self._dead: ReplCrashed | None = None
        self.next_env = 0
        """The id the REPL gives the next command that records an environment: every `cmd` (and
        `unpickleEnvFrom`) gets the next integer, from 0 (`recordCommandSnapshot` in REPL/Main.lean)."""

    @classmethod
    async def start(cls, spec: ReplSpec, repl_id: str) -> Repl:
        """Start a REPL process (ReplCrashed when it cannot be started)."""
        return cls(await ReplProcess.start(spec), spec, repl_id)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._dead is None and self._process.returncode is None

    @property
    def boxed(self) -> bool:
        return self._boxed

    @property
    def settled(self) -> bool:
        """`settle` has run: every reply from now on is checked to be the REPL's own."""
        return self._ownership.settled

    def stderr_tail(self) -> str:
        return self._process.stderr_tail()

    def stderr_since_command(self) -> str:
        """What the REPL wrote to stderr since the current (or last) command was sent: a crash
        report names only what its own proof caused."""
        return self._process.stderr_since_command()

    async def wait(self) -> int | None:
        """Wait for the process to exit (for whatever reason); its exit code. Returns when the
        process is gone, even while something it started still holds its pipes open."""
        return await self._process.wait()

    def stopped(self) -> bool:
        """Whether a process of the tree is stopped (SIGSTOP) or traced: it will not answer."""
        return self._process.tree.stopped()

    def tree(self) -> list[int]:
        """The pids of its process tree now: the process started, its wrappers' and its own children."""
        return proctree.tree_of(self._process.pid)

    def sample(self) -> tuple[float, int]:
        """CPU seconds and resident bytes of the process tree now (one /proc read per process)."""
        return self._process.tree.sample()

    def rss(self) -> int:
        """Resident memory of the whole process tree now, in bytes (0 once dead): walked afresh on
        each call, so processes a proof started since (children of `IO.Process.spawn`) count too."""
        return self._process.tree.rss()

    async def settle(self) -> None:
        """The REPL has answered its first request: its process tree is complete (`lake env` has
        started the REPL, the box its init). Remember the tree and the REPL process: from now on
        every reply must come from it alone (see ownership.py)."""
        await self._ownership.settle(self._process.tree.pids(fresh=True))

    async def request(self, data: bytes) -> bytes:
        """Send one encoded request and return the reply's bytes (without its blank line).

        Raises ReplCrashed, after killing the process, when it cannot be written to, on EOF, and
        when anything but exactly the REPL's own reply arrives: bytes written between replies, or
        a reply where the barrier's answer belongs (see `protocol.BARRIER`), did not come from the
        REPL's loop and must never be read as this or a later proof's reply.
        """
        if self._dead is not None:
            raise self._dead
        if self._process.pending:
            # Not this request's fault (it was not sent): something left behind by an earlier one.
            await self._forged("the REPL wrote output between replies (not the REPL's own)")
        if not await self._process.write(data + BARRIER):
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
        if not answered or self._process.pending or not raw.strip():
            await self._forged(FOLLOWED)
        if (breach := await self._ownership.breach(self._process)) is not None:
            if breach.exited:
                await self._die(breach.reason, exited=True)
                raise self._dead  # type: ignore[misc]
            await self._forged(breach.reason)
        return raw

    async def _next_reply(self) -> bytes:
        """The next reply from what stdout brought (waiting for it), without its blank line."""
        pending = self._process.pending
        searched = 0
        while (end := pending.find(b"\n\n", searched)) < 0:
            if len(pending) > self._max_reply:
                await self._die(
                    f"the REPL's reply passed {self._max_reply:,} bytes (LEAN_SERVER_MAX_REPLY_BYTES); the REPL"
                    " was stopped before the rest of it was read (print less, or ask for a smaller infotree mode)",
                    kind=ReplyTooLarge,
                )
                raise self._dead  # type: ignore[misc]
            if self._process.stdout_ended:
                await self._die("the REPL exited", exited=True)
                raise self._dead  # type: ignore[misc]
            searched = max(0, len(pending) - 1)
            await self._process.more_output()
        raw = bytes(pending[:end])
        del pending[: end + 2]
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
        hwm = measure and self._process.tree.reset_peaks()
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
                await self._forged(
                    f"the REPL broke the protocol: a reply with env {reply.env} where the REPL gives "
                    f"{expected} (not the REPL's own reply)"
                )
            self.next_env += 1
        if not measure:
            self._cpu_seen = -1.0
            return reply, Usage(wall, 0.0, 0)
        cpu, rss = self.sample()
        self._cpu_seen = cpu
        peak = rss
        if hwm:
            with contextlib.suppress(OSError, ValueError):
                peak = max(rss, self._process.tree.peak())
        return reply, Usage(wall, max(0.0, cpu - before), rss, peak)

    async def ping(self) -> None:
        """Wait until the REPL reads requests (its box is set up); records nothing."""
        await self.request(BARRIER)

    async def _forged(self, reason: str) -> NoReturn:
        """What came back was not (all) the REPL's own, or not the protocol: it dies for `reason`."""
        await self._die(reason)
        assert self._dead is not None
        raise self._dead

    async def _die(self, reason: str, *, exited: bool = False, kind: type[ReplCrashed] = ReplCrashed) -> None:
        """Kill the REPL for `reason` and remember why. After an EOF (`exited`) the process is on
        its way out: its own exit code (a crash, Lean's out-of-memory exit, someone else's SIGKILL)
        is waited for and kept; a REPL the server had to kill has none (the SIGKILL was ours)."""
        if exited:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), EXIT_GRACE)
        own = self._process.has_exited
        await self.kill()  # waits for the last words: the exit code and stderr tell an OOM from a crash
        self._dead = kind(reason, self._process.returncode if own else None, self.stderr_since_command())

    async def kill(self) -> None:
        """SIGKILL the whole process group and reap it. Idempotent; returns once the process is gone."""
        if self._dead is None:
            self._dead = ReplCrashed("the REPL was killed", None, "")
        await self._process.kill()
