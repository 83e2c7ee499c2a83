"""A reward or client used in a process, then in that process's pool workers (fork, forkserver, spawn):
what verl's reward managers and many RL codebases do. Each call in a worker has a deadline: before the
fix a forked worker hung (or gRPC aborted it) on its first call."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import multiprocessing
import os
import pickle
from collections.abc import Iterator
from multiprocessing import forkserver, resource_tracker
from typing import Any

import psutil
import pytest

from kimina_grpc.client import AsyncKiminaClient, ForkedProcessError, KiminaClient
from kimina_grpc.rewards import LeanReward, trl_reward, verl_reward
from kimina_grpc.testing import serve_process

from .helpers import eventually_sync

DEADLINE = 60  # seconds for one worker's answer; a hung worker fails the test instead of the run
GOOD = "```lean4\ntheorem t : True := trivial\n```"
BAD = "```lean4\ntheorem t : True := by\n  -- fake: error unsolved goals\n```"
METHODS = ["fork", "forkserver", "spawn"]

_adopted: dict[str, Any] = {}


def _adopt(thing: Any) -> None:
    """The pool's initializer: with fork the very object of the parent (its client inside), else a pickled copy."""
    _adopted["it"] = thing


def _score_in_worker(completions: list[str]) -> tuple[int, list[float | None]]:
    return os.getpid(), _adopted["it"](completions=completions)


def _verl_in_worker(solution: str) -> tuple[int, Any]:
    return os.getpid(), _adopted["it"]("data", solution, None)


def _verify_in_worker(code: str) -> tuple[int, list[str]]:
    return os.getpid(), [r.verdict.name for r in _adopted["it"].verify([code])] + [
        r.verdict.name for r in _adopted["it"].verify_stream([code, code + "\n"])
    ]


def _async_in_worker(target: str) -> str:
    async def go() -> str:
        try:
            async with AsyncKiminaClient(target) as client:
                return await client.health_status()
        except ForkedProcessError as exc:
            return f"refused: {exc}"

    return asyncio.run(go())


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    with serve_process({"LEAN_SERVER_MAX_REPLS": "2"}) as (_, port):
        yield f"127.0.0.1:{port}"
    # multiprocessing keeps its forkserver and resource tracker for the life of this process; the
    # workers' helper processes exit once their worker is gone. Nothing of this module outlives it.
    forkserver._forkserver._stop()  # type: ignore[attr-defined]
    resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]
    eventually_sync(lambda: not _descendants(), what="the pools' processes to exit")


def _descendants() -> list[psutil.Process]:
    alive = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
    return alive


@pytest.mark.parametrize("method", METHODS)
def test_a_trl_reward_used_in_the_parent_scores_in_pool_workers(target: str, method: str) -> None:
    reward = trl_reward(target=target)
    try:
        assert reward(completions=[GOOD, BAD]) == [1.0, 0.0]  # the parent's client and channel are live
        with multiprocessing.get_context(method).Pool(2, initializer=_adopt, initargs=(reward,)) as pool:
            answers = [pool.apply_async(_score_in_worker, ([GOOD, BAD, "no code"],)) for _ in range(4)]
            got = [a.get(timeout=DEADLINE) for a in answers]
        assert all(pid != os.getpid() for pid, _ in got)
        assert [rewards for _, rewards in got] == [[1.0, 0.0, 0.0]] * 4
        assert reward(completions=[GOOD]) == [1.0]  # and the parent's still works afterwards
    finally:
        reward.close()


@pytest.mark.parametrize("method", METHODS)
def test_a_verl_reward_used_in_the_parent_scores_per_sample_in_pool_workers(target: str, method: str) -> None:
    compute_score = verl_reward(target=target)
    try:
        assert compute_score("data", GOOD, None)["score"] == 1.0
        with multiprocessing.get_context(method).Pool(2, initializer=_adopt, initargs=(compute_score,)) as pool:
            got = pool.map_async(_verl_in_worker, [GOOD, BAD] * 3).get(timeout=DEADLINE)
        assert [score["verdict"] for _, score in got] == ["VALID", "INVALID"] * 3
    finally:
        compute_score.close()


def test_a_client_used_in_the_parent_checks_in_a_forked_child_and_the_parent_keeps_its_own(target: str) -> None:
    with KiminaClient(target) as client:
        assert client.verify(["theorem a : True := trivial"])[0].ok
        with multiprocessing.get_context("fork").Pool(1, initializer=_adopt, initargs=(client,)) as pool:
            pid, verdicts = pool.apply_async(_verify_in_worker, ("theorem b : True := trivial",)).get(timeout=DEADLINE)
        assert pid != os.getpid() and verdicts == ["VALID"] * 3
        assert client.verify(["theorem c : True := trivial"])[0].ok  # the child closed nothing of ours


def test_the_async_client_in_a_forked_child_says_why_at_once(target: str) -> None:
    reward = trl_reward(target=target)
    try:
        reward(completions=[GOOD])  # gRPC has run in this process
        with multiprocessing.get_context("fork").Pool(1) as pool:
            said = pool.apply_async(_async_in_worker, (target,)).get(timeout=DEADLINE)
        assert said.startswith("refused: ") and "'spawn' or 'forkserver'" in said
    finally:
        reward.close()


def test_a_reward_pickles_without_its_client_and_closes_only_its_own(target: str) -> None:
    reward: LeanReward = trl_reward(target=target)
    try:
        first = reward.client
        assert reward(completions=[GOOD]) == [1.0] and reward.client is first
        reward.close()
        assert reward(completions=[GOOD]) == [1.0] and reward.client is not first  # made again on use
    finally:
        reward.close()


def _stream_then_call_in_worker(codes: list[str]) -> list[str]:
    client = _adopted["it"]
    said = []
    stream = client.verify_stream(codes)
    said.append(next(stream).verdict.name)
    try:
        client.verify([codes[0]])  # from inside the stream's loop: refused, not a deadlock
    except RuntimeError as exc:
        said.append(str(exc))
    stream.close()  # left half-read: the helper is replaced
    said += [r.verdict.name for r in client.verify(codes)]
    try:
        client.verify([{"id": "x", "code": "theorem x : True := trivial"}] * 2)
    except Exception as exc:  # the server refuses repeated ids: the helper's error crosses, typed
        said.append(type(exc).__name__)
    said += [r.verdict.name for r in client.verify(codes[:1])]
    return said


def test_a_forked_clients_helper_survives_abandoned_streams_and_errors(target: str) -> None:
    codes = [f"theorem t{i} : True := trivial" for i in range(5)]
    with KiminaClient(target) as client:
        client.health()
        with multiprocessing.get_context("fork").Pool(1, initializer=_adopt, initargs=(client,)) as pool:
            said = pool.apply_async(_stream_then_call_in_worker, (codes,)).get(timeout=DEADLINE)
    assert said[0] == "VALID" and "one call at a time" in said[1]
    assert said[2:] == ["VALID"] * 5 + ["InvalidArgument", "VALID"]


COPIES: dict[str, Any] = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "pickle": lambda reward: pickle.loads(pickle.dumps(reward)),
}


@pytest.mark.parametrize("how", sorted(COPIES))
def test_a_copy_of_a_reward_used_in_the_parent_scores_in_forked_workers(target: str, how: str) -> None:
    reward = trl_reward(target=target)
    twin = COPIES[how](reward)
    try:
        assert reward(completions=[GOOD]) == [1.0] and twin(completions=[BAD]) == [0.0]  # both used here
        with multiprocessing.get_context("fork").Pool(2, initializer=_adopt, initargs=(twin,)) as pool:
            got = pool.map_async(_score_in_worker, [[GOOD, BAD]] * 3).get(timeout=DEADLINE)
        assert [rewards for _, rewards in got] == [[1.0, 0.0]] * 3
        assert reward(completions=[BAD]) == [0.0] and twin(completions=[GOOD]) == [1.0]
    finally:
        twin.close()
        reward.close()
