"""Where replies are parsed: small ones on the event loop, large or deep ones in a helper process.

A reply with an info tree can be tens of MiB and thousands of levels deep. `json.loads` holds the
GIL for its whole run (about 40 ms per MB here), so a thread does not keep the event loop (timers,
health, other streams) running: only another process does. Deep trees overflow Python's default
recursion bound (1,000), which only another process can safely raise: there the parse runs in a
thread with a large stack and a recursion bound of 20,000. What comes back is the parsed reply with
its info tree as JSON text (see `Reply.infotree`), so the loop never walks the tree.

The helper is this module's `main` in its own interpreter, started on the first reply that needs it, fed
over a pipe (length-prefixed requests; replies as a status byte, a length and a pickle of our own
`Reply`), and it exits when its stdin closes (so it never outlives the server). The reply comes back
in slices of `SLICE` messages (sorries, tactics), each unpickled in its own turn of the loop: one
pickle of 300,000 messages held the loop for 3 s.

Every reply is checked and bounded as it is parsed (`bounds.parse`). Replies parsed in the helper
hold a share of one server-wide budget of bytes (`configure`) while they wait for it and are parsed,
and all of it happens within what is left of the proof's timeout (`deadline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import struct
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, BinaryIO

from kimina_grpc.repl import bounds, reaper, wrappers
from kimina_grpc.repl.protocol import ProtocolError, Reply, ReplyInvalid, ReplyTooDeep, ReplyTooSlow

INLINE_BYTES = 128 << 10
"""Replies up to this size are parsed on the loop (a few ms at most), unless they nest too deeply."""
_DEEP_RECURSION = 20_000
_DEEP_STACK = 512 << 20
SLICE = 1_000
"""Messages (sorries, tactics) per pickled slice: a few ms of the loop's time each."""
_REQUEST = struct.Struct("!QQQ")  # raw length, line shift, most items kept
_ANSWER = struct.Struct("!BQ")  # status, payload length
_OK, _PROTOCOL, _TOO_DEEP, _INVALID = 0, 1, 2, 3
_ERRORS: dict[int, type[Exception]] = {_PROTOCOL: ProtocolError, _TOO_DEEP: ReplyTooDeep, _INVALID: ReplyInvalid}


class ByteBudget:
    """Bytes of replies being decoded at once, over every REPL of the server: a reply waits (first
    come, first served) until its bytes fit; one larger than the whole budget waits until it is
    alone. Replies are bounded one by one (LEAN_SERVER_MAX_REPLY_BYTES); this bounds them together."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        if self._waiters or not self._fits(size):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append((size, waiter))
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self.used -= size  # granted, then cancelled: give it back
                with contextlib.suppress(ValueError):
                    self._waiters.remove((size, waiter))
                self._wake()
                raise
        else:
            self.used += size
        try:
            yield
        finally:
            self.used -= size
            self._wake()

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.capacity

    def _wake(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            size, waiter = self._waiters.popleft()
            if not waiter.done():
                self.used += size
                waiter.set_result(None)


BUDGET = ByteBudget(128 << 20)


def configure(budget_bytes: int) -> None:
    """The server-wide budget of reply bytes being decoded at once (LEAN_SERVER_MAX_DECODING_BYTES)."""
    BUDGET.capacity = budget_bytes
    BUDGET._wake()


class _Helper:
    """The helper process of one event loop; requests go through it one at a time. Its process,
    pipes and lock belong to the loop that made them, so each loop has its own (`_helper`)."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()
        self.stopping: set[asyncio.Task[None]] = set()
        """Helpers killed on a cancel, being reaped in the background (`close` waits for them)."""

    async def parse(self, raw: bytes, shift: int, max_items: int) -> Reply:
        async with self.lock:
            if self.proc is None or self.proc.returncode is not None:
                self.proc = await asyncio.create_subprocess_exec(
                    *_helper_argv(),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env={},  # the server's environment (API key, Redis password) is none of its business
                )
                reaper.track(self.proc.pid)  # asyncio reaps it, not the adopted-children reaper
            proc = self.proc
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(_REQUEST.pack(len(raw), shift, max_items))
                proc.stdin.write(raw)  # not concatenated: a copy of tens of MB is a stall of its own
                await proc.stdin.drain()
                status, size = _ANSWER.unpack(await proc.stdout.readexactly(_ANSWER.size))
                payload = await proc.stdout.readexactly(size)
            except asyncio.CancelledError:
                # Cancelled mid-exchange: its answer would be read as the next request's. The helper
                # goes now, is reaped in the background (`close` waits for that); the next large
                # reply starts another.
                self.proc = None
                _kill(proc)
                self.stopping.add(task := asyncio.ensure_future(_stop(proc)))
                task.add_done_callback(self.stopping.discard)
                raise
            except (asyncio.IncompleteReadError, ConnectionError, RuntimeError, OSError):
                await _stop(proc)
                self.proc = None
                raise ReplyTooDeep(
                    f"the reply ({len(raw)} bytes) killed its parser (too deep, or too large for its memory)"
                ) from None
        if status == _OK:
            return await _unpickle(payload)
        raise _ERRORS.get(status, ReplyTooDeep)(payload.decode())

    async def close(self) -> None:
        """Stop the helper process and wait for it, and for those being reaped."""
        proc, self.proc = self.proc, None
        if proc is not None:
            await _stop(proc)
        while reaping := [task for task in self.stopping if not task.done()]:
            await asyncio.gather(*reaping, return_exceptions=True)


_helpers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Helper] = weakref.WeakKeyDictionary()


def _helper() -> _Helper:
    """The running loop's helper: a process (its pipes, its lock) made on one loop cannot be used
    or waited for on another, as when a process runs one server after another."""
    loop = asyncio.get_running_loop()
    helper = _helpers.get(loop)
    if helper is None:
        helper = _helpers[loop] = _Helper()
    return helper


def _helper_argv() -> list[str]:
    """The helper's command line. It starts with an empty environment, so it is told the server's
    import path instead (-I: no PYTHON* variable or user site would apply anyway); not -m: the
    package imports this module."""
    return [sys.executable, "-I", "-c", f"import sys; sys.path[:] = {sys.path!r}; from {__name__} import main; main()"]


async def _unpickle(payload: bytes) -> Reply:
    """The reply from the helper's slices, one slice per turn of the loop."""
    head, slices = pickle.loads(payload)  # our own process pickled our own types
    parts: list[list[Any]] = []
    for chunks in slices:
        items: list[Any] = []
        for chunk in chunks:
            await asyncio.sleep(0)
            items.extend(pickle.loads(chunk))
        parts.append(items)
    reply: Reply = replace(head, messages=tuple(parts[0]), sorries=tuple(parts[1]), tactics=tuple(parts[2]))
    return reply


def _sliced(reply: Reply) -> bytes:
    head = replace(reply, messages=(), sorries=(), tactics=())
    slices = [
        [pickle.dumps(items[i : i + SLICE], protocol=pickle.HIGHEST_PROTOCOL) for i in range(0, len(items), SLICE)]
        for items in (reply.messages, reply.sorries, reply.tactics)
    ]
    return pickle.dumps((head, slices), protocol=pickle.HIGHEST_PROTOCOL)


async def decode(
    raw: bytes, shift: int = 0, *, max_items: int = bounds.MAX_ITEMS, deadline: float | None = None
) -> Reply:
    """The parsed reply, positions moved down by `shift` lines, checked and bounded (`bounds.parse`).
    Raises ProtocolError when it is not a reply, ReplyTooDeep when it nests deeper than even the
    helper process parses, ReplyInvalid when a field cannot be carried, ReplyTooSlow when it is not
    parsed by `deadline` (time.monotonic(); the proof's timeout: the REPL's output counts against it)."""
    if len(raw) <= INLINE_BYTES:
        try:
            return bounds.parse(raw, shift, max_items)
        except ReplyTooDeep:
            pass  # small but deep: the helper parses with a deeper bound
    left = None if deadline is None else deadline - time.monotonic()
    try:
        async with asyncio.timeout(left):
            async with BUDGET.hold(len(raw)):
                return await _helper().parse(raw, shift, max_items)
    except TimeoutError:
        raise ReplyTooSlow(
            f"the reply ({len(raw):,} bytes) could not be read within the proof's timeout"
            + (f" (the server was reading {BUDGET.used:,} bytes of other replies)" if BUDGET.used else "")
        ) from None


async def shutdown() -> None:
    """Stop the running loop's helper process and wait for it (and for any killed on a cancel still
    being reaped): call it before the loop closes. The next large reply starts a helper again."""
    helper = _helpers.pop(asyncio.get_running_loop(), None)
    if helper is not None:
        await helper.close()


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Kill and reap the helper, and close its pipes: an answer cut off (a cancel mid-read) leaves
    its stdout paused with data unread, so asyncio would never see the end of it and never close
    the process's transport (garbage-collected after its loop closed, it fails to close then)."""
    _kill(proc)
    await proc.wait()
    reaper.untrack(proc.pid)
    proc._transport.close()  # type: ignore[attr-defined]  # asyncio's Process has no close()


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The helper's loop: parse requests until stdin closes."""
    while header := stdin.read(_REQUEST.size):
        if len(header) < _REQUEST.size:
            return
        size, shift, max_items = _REQUEST.unpack(header)
        raw = stdin.read(size)
        try:
            status, payload = _OK, _sliced(bounds.parse(raw, shift, max_items))
        except ProtocolError as exc:
            status, payload = _PROTOCOL, str(exc).encode()
        except ReplyInvalid as exc:
            status, payload = _INVALID, str(exc).encode()
        except ReplyTooDeep:
            status, payload = _TOO_DEEP, f"the reply nests deeper than {_DEEP_RECURSION} levels".encode()
        except Exception as exc:  # anything else about this reply: the next one is parsed all the same
            status, payload = _TOO_DEEP, f"the reply could not be parsed: {exc!r}"[:500].encode()
        stdout.write(_ANSWER.pack(status, len(payload)) + payload)
        stdout.flush()


def main() -> None:
    # Like the server: a process of the same uid (an unboxed REPL) cannot read its memory (replies
    # of other proofs) or attach to it.
    wrappers.undumpable()
    sys.setrecursionlimit(_DEEP_RECURSION)
    threading.stack_size(_DEEP_STACK)
    worker = threading.Thread(target=_serve, args=(sys.stdin.buffer, sys.stdout.buffer))
    worker.start()
    worker.join()


if __name__ == "__main__":
    main()
