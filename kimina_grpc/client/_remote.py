"""The blocking client's calls run in a fresh helper process, for a process that cannot use gRPC
itself: one forked from a process that had opened a channel (see _process.py).

The helper is `main()` in a new interpreter, started with fork+exec (a clean gRPC): it
makes a KiminaClient with the caller's arguments and answers calls sent as pickles over its stdin
and stdout (the two ends belong to one process tree and trust each other). It exits when its stdin
closes, that is when the process that started it exits. Inputs are read whole before they are sent:
a generator given to `verify_stream` is exhausted first.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

import grpc

from kimina_grpc.client._types import KiminaError


def _portable(value: Any) -> Any:
    """A value that pickles: an iterator (a generator of proofs) becomes a list."""
    return list(value) if isinstance(value, Iterator) else value


def _send(pipe: IO[bytes], message: tuple[Any, ...]) -> None:
    try:
        data = pickle.dumps(message)
    except Exception:  # an exception that does not pickle: its text crosses instead
        kind, value = message
        data = pickle.dumps((kind, RuntimeError(f"{type(value).__name__}: {value}")))
    pipe.write(data)
    pipe.flush()


class Remote:
    """KiminaClient's calls, made by a helper process (started now; again after it died)."""

    def __init__(self, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        self._init = (args, kw)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        with self._lock:
            self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import main; main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._proc = proc
        self._request(("init", *self._init))
        self._reply()
        return proc

    def _request(self, message: tuple[Any, ...]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            _send(self._proc.stdin, message)
        except OSError:
            self._lost()

    def _reply(self) -> tuple[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            kind, value = pickle.load(self._proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            self._lost()
        if kind == "error":
            raise value
        return kind, value

    def _lost(self) -> Any:
        code = self._stop()
        raise KiminaError(grpc.StatusCode.UNAVAILABLE, f"the client's helper process exited (status {code})")

    def _stop(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def call(self, name: str, *args: Any, **kw: Any) -> Any:
        args = tuple(_portable(a) for a in args)
        with self._lock:
            if self._proc is None:
                self._start()
            self._request(("call", name, args, kw))
            return self._reply()[1]

    def stream(self, *args: Any, **kw: Any) -> Iterator[Any]:
        args = tuple(_portable(a) for a in args)
        with self._lock:
            if self._proc is None:
                self._start()
            self._request(("stream", "verify_stream", args, kw))
            done = False
            try:
                while True:
                    kind, value = self._reply()
                    if kind == "end":
                        done = True
                        return
                    yield value
            except KiminaError:
                done = True
                raise
            finally:
                if not done:  # left half-read: the helper is still sending, start afresh next time
                    self._stop()

    def close(self) -> None:
        with self._lock:
            self._stop()


def _serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    from kimina_grpc.client._sync import KiminaClient

    _, args, kw = pickle.load(requests)
    try:
        client = KiminaClient(*args, **kw)
    except Exception as exc:
        _send(replies, ("error", exc))
        return
    _send(replies, ("ok", None))
    with client:
        while True:
            try:
                kind, name, args, kw = pickle.load(requests)
            except EOFError:
                return
            try:
                if kind == "stream":
                    for item in client.verify_stream(*args, **kw):
                        _send(replies, ("item", item))
                    _send(replies, ("end", None))
                else:
                    _send(replies, ("ok", getattr(client, name)(*args, **kw)))
            except BrokenPipeError:
                return
            except Exception as exc:
                _send(replies, ("error", exc))


def main() -> None:
    """The helper process: requests on stdin, replies on what was stdout (stdout itself goes to stderr)."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, not into the replies
    _serve(sys.stdin.buffer, replies)
