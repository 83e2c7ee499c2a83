"""A reward's copies and settings, as trainers and users handle them: a shallow copy is a reward of its
own (its client, its waiting per-sample calls), and the settings a reward checks with are the ones it
holds when it checks (what the reward did before it was split into rewards/)."""

from __future__ import annotations

import copy
import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from kimina_grpc.rewards import RewardTable, trl_reward, verl_reward

from .helpers import eventually_sync
from .helpers.server import threaded_app

STATEMENT = "theorem t : True := by sorry"
GOOD = "```lean4\ntheorem t : True := by\n  trivial\n```"
SORRY = "```lean4\ntheorem t : True := by\n  -- fake: sorry\n```"


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    with threaded_app(max_repls=2) as (app, _):
        yield f"127.0.0.1:{app.port}"


class HeldMessage(Mapping[str, str]):
    """A chat message whose reading waits until the test releases it: the reward that reads it is
    held inside its check, deterministically."""

    def __init__(self, text: str) -> None:
        self.data = {"role": "assistant", "content": text}
        self.reading = threading.Event()
        self.release = threading.Event()

    def __getitem__(self, key: str) -> str:
        self.reading.set()
        self.release.wait(60)
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def test_a_copy_of_a_verl_reward_answers_its_own_callers_with_its_own_table(target: str) -> None:
    score = verl_reward(target=target)
    shaped = copy.copy(score)
    shaped.table = RewardTable({"VALID": 1.0, "SORRY": 0.5})
    held = HeldMessage(GOOD)
    answers: dict[str, Any] = {}

    def call(name: str, reward: Any, solution: Any) -> None:
        answers[name] = reward("data", solution, STATEMENT)

    original = threading.Thread(target=call, args=("original", score, [held]))
    twin = threading.Thread(target=call, args=("copy", shaped, SORRY))
    try:
        original.start()
        eventually_sync(held.reading.is_set, what="the original's batch held in its check")
        twin.start()
        # The copy's caller never waits on the original's batch, nor is scored with its table.
        eventually_sync(lambda: "copy" in answers, what="the copy's call answered while the original's is held")
        assert answers["copy"]["verdict"] == "SORRY" and answers["copy"]["score"] == 0.5
    finally:
        held.release.set()
        original.join(60)
        twin.join(60)
        shaped.close()
        score.close()
    assert answers["original"]["score"] == 1.0


def test_closing_a_copy_leaves_the_originals_stream_alone(target: str) -> None:
    reward = trl_reward(target=target)
    try:
        assert reward(completions=[GOOD]) == [1.0]
        twin = copy.copy(reward)
        assert twin(completions=[GOOD]) == [1.0]
        codes = [f"theorem s{i} : True := trivial" for i in range(4)]
        stream = reward.client.verify_stream(codes, window=1)
        first = next(stream)
        twin.close()  # the copy's own client; the original's stream goes on
        assert sorted([first.id] + [r.id for r in stream]) == ["0", "1", "2", "3"]
        assert reward(completions=[GOOD]) == [1.0]
    finally:
        reward.close()


def _dead_target() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_a_reward_checks_with_the_settings_it_holds_when_it_checks(target: str) -> None:
    # verl's reward file builds compute_score at import; a script may point it elsewhere afterwards.
    reward = trl_reward(target=_dead_target(), max_attempts=1)
    try:
        reward.target = target
        reward.max_attempts = 3
        reward.verify_options = {**reward.verify_options, "diagnostics": True}
        assert reward(completions=[GOOD]) == [1.0]
        result = reward.last_infos[0].result
        assert result is not None and result.diagnostics is not None
    finally:
        reward.close()
