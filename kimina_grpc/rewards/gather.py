"""Per-sample calls gathered into batches: calls that arrive while a batch is being checked (a
trainer's concurrent workers) go together in the next one. The first caller checks what is pending,
then what arrived meanwhile, until nothing is left; no caller waits for others to arrive. Per
process: a fork child never waits on its parent's callers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from kimina_grpc.client._process import PerProcess

S = TypeVar("S")
R = TypeVar("R")


class _Pending(Generic[S, R]):
    """The calls waiting for the next batch, and whether a caller is checking (one process's)."""

    def __init__(self) -> None:
        self.calls: list[tuple[S, Future[R]]] = []
        self.lock = threading.Lock()
        self.flushing = False


class Gather(Generic[S, R]):
    """`submit(item, flush)` answers `flush(batch)`'s result for `item`, `flush` run on batches of
    the items submitted meanwhile; a batch's exception is every one of its callers'."""

    def __init__(self) -> None:
        self._pending: PerProcess[_Pending[S, R]] = PerProcess(_Pending)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), ()  # the waiting calls are this process's: a copy starts with none

    def submit(self, item: S, flush: Callable[[list[S]], list[R]]) -> R:
        done: Future[R] = Future()
        state = self._pending.get()
        with state.lock:
            state.calls.append((item, done))
            lead = not state.flushing
            state.flushing = True
        if lead:
            while True:
                with state.lock:
                    batch, state.calls = state.calls, []
                    if not batch:
                        state.flushing = False
                        break
                _run(batch, flush)
        return done.result()


def _run(batch: list[tuple[S, Future[R]]], flush: Callable[[list[S]], list[R]]) -> None:
    try:
        answers = flush([item for item, _ in batch])
    except BaseException as exc:
        for _, done in batch:
            done.set_exception(exc)
        return
    for (_, done), answer in zip(batch, answers, strict=True):
        done.set_result(answer)
