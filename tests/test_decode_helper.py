"""The decode helper process (kimina_grpc/repl/decode.py) belongs to the event loop that started it:
`shutdown` leaves nothing of it behind, and a later loop (a process serving one server after
another, as the tests do) gets one of its own."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
from collections.abc import Iterator

import psutil
import pytest

from kimina_grpc.repl import decode
from kimina_grpc.testing.fake_messages import big_tree

from . import helpers
from .helpers.processes import children

BIG = json.dumps({"env": 7, "messages": [], "infotree": big_tree(20, 1)}).encode()  # ~15 MB: the helper's
DEEP = b'{"env": 1, "infotree": ' + b"[" * 3000 + b"]" * 3000 + b"}"  # small but too deep for the loop


def _helper_process() -> psutil.Process | None:
    """The decode helper, once it has spent enough time to be parsing (or answering) a request:
    its parent is then past starting it, in the middle of the exchange."""
    for p in children():
        with contextlib.suppress(psutil.Error):
            if decode.__name__ in " ".join(p.cmdline()) and sum(p.cpu_times()[:2]) > 0.3:
                return p
    return None


@contextlib.contextmanager
def _unraisable() -> Iterator[list[str]]:
    """What Python could not raise in the block (a __del__ that failed), as text."""
    caught: list[str] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda u: caught.append(f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}")
    try:
        yield caught
    finally:
        sys.unraisablehook = previous


async def _cancelled_mid_decode() -> int:
    """A large decode cancelled while the helper works on it (a caller gone, a proof's timeout),
    then `shutdown`, as a server's close does. The helper's pid."""
    task = asyncio.create_task(decode.decode(BIG))
    helper = await helpers.eventually(_helper_process, interval=0.005, what="the helper at work")
    assert helper is not None and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await decode.shutdown()
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, f"shutdown left work on the loop: {others}"
    assert not psutil.pid_exists(helper.pid), "shutdown returned before the helper was reaped"
    return helper.pid


async def _decoded(raw: bytes) -> int | None:
    try:
        return (await asyncio.wait_for(decode.decode(raw), 30)).env
    finally:
        await decode.shutdown()


def test_a_decode_cancelled_mid_reply_leaves_nothing_once_shutdown_returns() -> None:
    """Once `shutdown` returns, the helper killed by the cancel is reaped and its pipes are closed:
    nothing of it is left to be collected after its loop has closed."""
    with _unraisable() as caught:
        asyncio.run(_cancelled_mid_decode())
        gc.collect()
    assert caught == []
    assert children() == []


def test_the_helper_serves_a_second_loop_after_the_first_closed() -> None:
    """One loop after another (each shut down before it closes): each gets its own helper and its
    own lock, and each answer is its own."""
    with _unraisable() as caught:
        assert asyncio.run(_decoded(BIG)) == 7
        assert asyncio.run(_decoded(DEEP)) == 1
        asyncio.run(_cancelled_mid_decode())
        assert asyncio.run(_decoded(DEEP)) == 1
        gc.collect()
    assert caught == []
    assert children() == []


async def test_concurrent_decodes_on_a_later_loop_share_its_helper_in_turn() -> None:
    """Decodes that wait for the helper's lock (bound to the loop of the first that waited) on a
    loop after another loop had its turn: each gets its own answer."""
    await asyncio.to_thread(asyncio.run, _contended())
    try:
        replies = await asyncio.wait_for(asyncio.gather(*(decode.decode(raw) for raw in (BIG, DEEP, BIG))), 60)
        assert [r.env for r in replies] == [7, 1, 7]
    finally:
        await decode.shutdown()


async def _contended() -> None:
    try:
        replies = await asyncio.gather(decode.decode(DEEP), decode.decode(DEEP))
        assert [r.env for r in replies] == [1, 1]
    finally:
        await decode.shutdown()
