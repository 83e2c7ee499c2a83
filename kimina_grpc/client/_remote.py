"""The blocking client's calls run in a fresh helper process, for a process that cannot use gRPC
itself: one forked from a process that had opened a channel (see _process.py).

The helper is `_remote_helper.main()` in a new interpreter, started with fork+exec (a clean gRPC): it
makes a KiminaClient with the caller's arguments and answers calls sent as pickles over its stdin
and stdout (the two ends belong to one process tree and trust each other). It exits when its stdin
closes, that is when the process that started it exits. Inputs are read whole before they are sent:
a generator given to `verify_stream` is exhausted first.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

import grpc

from kimina_grpc.client._errors import KiminaError


def _portable(value: Any) -> Any:
    """A value that pickles: an iterator (a generator of proofs) becomes a list."""
    return list(value) if isinstance(value, Iterator) else value


def send(pipe: IO[bytes], message: tuple[Any, ...]) -> None:
    try:
        data = pickle.dumps(message)
    except Exception:  # an exception that does not pickle: its text crosses instead
        kind, value = message
        data = pickle.dumps((kind, RuntimeError(f"{type(value).__name__}: {value}")))
    pipe.write(data)
    pipe.flush()


class Remote:
    """KiminaClient's calls, made by a helper process (started now; again after it died). One call at
    a time: other threads wait; a call from inside a stream's loop in the same thread is refused."""

    def __init__(self, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        self._init = (args, kw)
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._answered = True
        with self._held():
            pass  # started now: a bad target is an error at construction

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        """The helper, started if need be, for one request; stopped when the request is left unfinished."""
        if self._owner == threading.get_ident():
            raise RuntimeError("in a forked process the client makes one call at a time: finish the stream first")
        with self._lock:
            self._owner = threading.get_ident()
            finished = False
            try:
                if self._proc is None:
                    self._start()
                yield
                finished = True
            finally:
                self._owner = None
                if not finished and not self._answered:
                    self._stop(kill=True)  # it may still be sending: its next reply would be taken for ours

    def _start(self) -> None:
        path = os.pathsep.join(p for p in sys.path if p)  # where this process found kimina_grpc, as spawn does
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from kimina_grpc.client._remote_helper import main; main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        try:
            self._exchange(("init", *self._init))
        except BaseException:
            self._stop(kill=True)
            raise

    def _exchange(self, message: tuple[Any, ...]) -> tuple[str, Any]:
        self._answered = False
        self._request(message)
        return self._reply()

    def _request(self, message: tuple[Any, ...]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            send(self._proc.stdin, message)
        except OSError:
            self._lost()

    def _reply(self) -> tuple[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            kind, value = pickle.load(self._proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            self._lost()
        self._answered = kind in ("ok", "end", "error")  # the request is over: the helper waits for the next
        if kind == "error":
            raise value
        return kind, value

    def _lost(self) -> Any:
        code = self._stop(kill=True)
        raise KiminaError(grpc.StatusCode.UNAVAILABLE, f"the client's helper process exited (status {code})")

    def _stop(self, *, kill: bool) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if kill:
            proc.kill()
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def call(self, name: str, *args: Any, **kw: Any) -> Any:
        args = tuple(_portable(a) for a in args)
        with self._held():
            return self._exchange(("call", name, args, kw))[1]

    def stream(self, *args: Any, **kw: Any) -> Iterator[Any]:
        args = tuple(_portable(a) for a in args)
        with self._held():
            kind, value = self._exchange(("stream", "verify_stream", args, kw))
            while kind != "end":
                yield value
                kind, value = self._reply()

    def close(self) -> None:
        with self._lock:
            self._stop(kill=False)
