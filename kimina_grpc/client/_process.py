"""The one place the clients get their gRPC channels, and what a forked process may reuse: nothing.

gRPC's core runs threads (the asyncio poller among them) that a `fork()` does not copy, and its state
(an epoll set shared with the parent, locks those threads held) is not usable in the child: a child of
a process that had opened a channel crashes or hangs on its first call, whether it reuses the
parent's channel or opens a new one (verl's and many RL codebases' process pools fork after the
reward has scored in the parent). So:

- every channel is opened with `open_channel`, which records that this process started gRPC and
  refuses, with ForkedProcessError, in a process forked from one that had;
- per-process state (a client, its channels, a lock) lives in `PerProcess`, which makes it again
  when the process id changes and never touches the parent's copy;
- `grpc_usable()` says whether this process may open channels; where it may not, the blocking
  client runs its calls in a fresh helper process (`_remote.py`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import grpc

T = TypeVar("T")


class _State:
    started = False
    """A channel was opened in this process, or in the process this one was forked from."""
    forked_after_start = False
    lock = threading.RLock()  # RLock: a client may be made inside another's make (a reward's client)


class ForkedProcessError(RuntimeError):
    """gRPC cannot be used in a process forked from one that had opened a channel."""


def _after_fork_in_child() -> None:
    _State.forked_after_start = _State.forked_after_start or _State.started
    _State.lock = threading.RLock()  # the parent's may have been held by a thread the child does not have


os.register_at_fork(after_in_child=_after_fork_in_child)


def grpc_usable() -> bool:
    """Whether this process may open gRPC channels (it was not forked after its parent opened one)."""
    return not _State.forked_after_start


def open_channel(
    target: str, options: Sequence[tuple[str, Any]], credentials: grpc.ChannelCredentials | None = None
) -> grpc.aio.Channel:
    """An asyncio channel to `target` (TLS with `credentials`); every client channel is made here."""
    if _State.forked_after_start:
        raise ForkedProcessError(
            f"process {os.getpid()} was forked from one that used gRPC, which cannot work in the child: "
            "use KiminaClient (it runs its calls in a fresh helper process here), or the 'spawn' or "
            "'forkserver' start method"
        )
    _State.started = True
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=options)
    return grpc.aio.insecure_channel(target, options=options)


class PerProcess(Generic[T]):
    """A value made on first use in each process: a fork child gets its own, made again, and the
    parent's copy (its threads are not in the child) is neither used nor closed there."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._pid = -1
        self._value: T | None = None

    def get(self) -> T:
        with _State.lock:
            if self._pid != os.getpid() or self._value is None:
                self._value = self._make()
                self._pid = os.getpid()
            return self._value

    def pop(self) -> T | None:
        """This process's value, forgotten (None when it has none); the caller closes it."""
        with _State.lock:
            value = self._value if self._pid == os.getpid() else None
            self._value = None
            return value
