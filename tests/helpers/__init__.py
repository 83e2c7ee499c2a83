"""Helpers shared by the test files (import from here, never from another test file)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T]], timeout: float = 30.0, interval: float = 0.02, what: str = ""
) -> T: ...


@overload
async def eventually(
    predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.02, what: str = ""
) -> T: ...


async def eventually(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 30.0,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """Waits until `predicate()` (sync or async) returns something truthy, and returns it.

    Tests wait on state with this, never on fixed sleeps. Fails with `what` (or the predicate's
    name) after `timeout` seconds; the timeout is generous because CI machines are slow, and a
    passing test never waits for it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what or getattr(predicate, '__name__', predicate)}")
        await asyncio.sleep(interval)


def eventually_sync(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """`eventually` for code outside an event loop (threads, subprocesses, sync clients)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what or getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)
