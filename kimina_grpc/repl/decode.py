"""Where replies are parsed: small ones on the event loop, large or deep ones in a helper process.

A reply with an info tree can be tens of MiB and thousands of levels deep. `json.loads` holds the
GIL for its whole run (about 40 ms per MB here), so a thread does not keep the event loop (timers,
health, other streams) running: only another process does. Deep trees overflow Python's default
recursion bound (1,000), which only another process can safely raise: there the parse runs in a
thread with a large stack and a recursion bound of 20,000. What comes back is the parsed reply with
its info tree as JSON text (see `Reply.infotree`), so the loop never walks the tree.

The helper is this module's `main` in its own interpreter, started on the first reply that needs it, fed
over a pipe (length-prefixed requests; replies as a status byte, a length and a pickle of our own
`Reply`), and it exits when its stdin closes (so it never outlives the server).
"""

from __future__ import annotations

import asyncio
import pickle
import struct
import sys
import threading
from typing import BinaryIO

from kimina_grpc.repl import reaper, sandbox
from kimina_grpc.repl.protocol import ProtocolError, Reply, ReplyTooDeep, parse_reply

INLINE_BYTES = 128 << 10
"""Replies up to this size are parsed on the loop (a few ms at most), unless they nest too deeply."""
_DEEP_RECURSION = 20_000
_DEEP_STACK = 512 << 20
_REQUEST = struct.Struct("!QQ")  # raw length, line shift
_ANSWER = struct.Struct("!BQ")  # status, payload length
_OK, _PROTOCOL, _TOO_DEEP = 0, 1, 2
_stopping: set[asyncio.Future[None]] = set()  # helpers killed on a cancel, being reaped


class _Helper:
    """The one helper process; requests go through it one at a time."""

    proc: asyncio.subprocess.Process | None = None
    lock: asyncio.Lock | None = None

    @classmethod
    async def parse(cls, raw: bytes, shift: int) -> Reply:
        if cls.lock is None:
            cls.lock = asyncio.Lock()
        async with cls.lock:
            if cls.proc is None or cls.proc.returncode is not None:
                cls.proc = await asyncio.create_subprocess_exec(
                    *_helper_argv(),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env={},  # the server's environment (API key, Redis password) is none of its business
                )
                reaper.track(cls.proc.pid)  # asyncio reaps it, not the adopted-children reaper
            proc = cls.proc
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(_REQUEST.pack(len(raw), shift) + raw)
                await proc.stdin.drain()
                status, size = _ANSWER.unpack(await proc.stdout.readexactly(_ANSWER.size))
                payload = await proc.stdout.readexactly(size)
            except asyncio.CancelledError:
                # Cancelled mid-exchange: its answer would be read as the next request's. The helper
                # goes (reaped in the background); the next large reply starts another.
                cls.proc = None
                _stopping.add(task := asyncio.ensure_future(_stop(proc)))
                task.add_done_callback(_stopping.discard)
                raise
            except (asyncio.IncompleteReadError, ConnectionError, RuntimeError, OSError):
                await _stop(proc)
                cls.proc = None
                raise ReplyTooDeep(
                    f"the reply ({len(raw)} bytes) killed its parser (too deep, or too large for its memory)"
                ) from None
        if status == _OK:
            reply: Reply = pickle.loads(payload)  # our own process pickled our own type
            return reply
        error = ProtocolError if status == _PROTOCOL else ReplyTooDeep
        raise error(payload.decode())


def _helper_argv() -> list[str]:
    """The helper's command line. It starts with an empty environment, so it is told the server's
    import path instead (-I: no PYTHON* variable or user site would apply anyway); not -m: the
    package imports this module."""
    return [sys.executable, "-I", "-c", f"import sys; sys.path[:] = {sys.path!r}; from {__name__} import main; main()"]


async def decode(raw: bytes, shift: int = 0) -> Reply:
    """The parsed reply, positions moved down by `shift` lines. Raises ProtocolError when it is not
    a reply, ReplyTooDeep when it nests deeper than even the helper process parses."""
    if len(raw) <= INLINE_BYTES:
        try:
            return parse_reply(raw, shift)
        except ReplyTooDeep:
            pass  # small but deep: the helper parses with a deeper bound
    return await _Helper.parse(raw, shift)


async def shutdown() -> None:
    """Stop the helper process and wait for it; the next large reply starts it again."""
    proc, _Helper.proc = _Helper.proc, None
    if proc is not None:
        await _stop(proc)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()
    reaper.untrack(proc.pid)


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The helper's loop: parse requests until stdin closes."""
    while header := stdin.read(_REQUEST.size):
        if len(header) < _REQUEST.size:
            return
        size, shift = _REQUEST.unpack(header)
        raw = stdin.read(size)
        try:
            status, payload = _OK, pickle.dumps(parse_reply(raw, shift), protocol=pickle.HIGHEST_PROTOCOL)
        except ProtocolError as exc:
            status, payload = _PROTOCOL, str(exc).encode()
        except ReplyTooDeep:
            status, payload = _TOO_DEEP, f"the reply nests deeper than {_DEEP_RECURSION} levels".encode()
        except Exception as exc:  # anything else about this reply: the next one is parsed all the same
            status, payload = _TOO_DEEP, f"the reply could not be parsed: {exc!r}"[:500].encode()
        stdout.write(_ANSWER.pack(status, len(payload)) + payload)
        stdout.flush()


def main() -> None:
    # Like the server: a process of the same uid (an unboxed REPL) cannot read its memory (replies
    # of other proofs) or attach to it.
    sandbox.undumpable()
    sys.setrecursionlimit(_DEEP_RECURSION)
    threading.stack_size(_DEEP_STACK)
    worker = threading.Thread(target=_serve, args=(sys.stdin.buffer, sys.stdout.buffer))
    worker.start()
    worker.join()


if __name__ == "__main__":
    main()
