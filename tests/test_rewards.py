"""Reward functions for TRL and verl against the real server with the stand-in REPL."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from kimina_grpc.rewards import (
    UNPARSABLE,
    RewardServerError,
    Unparsable,
    extract_lean,
    trl_reward,
    verl_reward,
)
from kimina_grpc.testing import serve_process
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually_sync
from .helpers.client import count_calls
from .helpers.server import threaded_app

ROOT = Path(__file__).resolve().parent.parent
STATEMENT = "theorem t : True := by sorry"


def block(body: str = "  trivial", statement: str = "theorem t : True := by", lang: str = "lean4") -> str:
    return f"I will prove it.\n```{lang}\nimport Mathlib\n\n{statement}\n{body}\n```\nDone."


def chat(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": text}]


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    with threaded_app(max_repls=2) as (app, _):
        yield f"127.0.0.1:{app.port}"


def test_trl_group_of_64_in_both_shapes_is_one_stream(target: str) -> None:
    kinds = {
        "valid": (block(), 1.0, "VALID"),
        "valid_chat": (chat(block()), 1.0, "VALID"),
        "valid_parts": (
            [{"role": "assistant", "content": [{"type": "text", "text": block(lang="lean")}]}],
            1.0,
            "VALID",
        ),
        "invalid": (block("  -- fake: error unsolved goals"), 0.0, "INVALID"),
        "sorry_chat": (chat(block("  -- fake: sorry")), 0.0, "SORRY"),
        "no_block": ("I cannot do this one.", 0.0, UNPARSABLE),
        "truncated": ("```lean4\nimport Mathlib\ntheorem t : True := by\n  tri", 0.0, UNPARSABLE),
        "other_statement": (block(statement="theorem t : False := by"), 0.0, UNPARSABLE),
    }
    names = [list(kinds)[i % len(kinds)] for i in range(64)]
    reward = trl_reward(target=target)
    try:
        calls = count_calls(reward.client._client, "StreamVerify")
        unary = count_calls(reward.client._client, "Verify")
        rewards = reward(
            prompts=["prove it"] * 64, completions=[kinds[k][0] for k in names], formal_statement=[STATEMENT] * 64
        )
        assert calls["StreamVerify"] == 1 and unary["Verify"] == 0
        assert rewards == [kinds[k][1] for k in names]
        assert [info.verdict for info in reward.last_infos] == [kinds[k][2] for k in names]
        reasons = {k: info.reason for k, info in zip(names, reward.last_infos, strict=True)}
        assert reasons["valid"] == ""
        assert reasons["invalid"] == "4:0: unsolved goals"
        assert "no ```lean4" in reasons["no_block"]
        assert "not closed" in reasons["truncated"]
        assert "formal statement" in reasons["other_statement"]
        assert all(
            info.code is None
            for k, info in zip(names, reward.last_infos, strict=True)
            if kinds[k][1] == 0.0 and kinds[k][2] == UNPARSABLE
        )
    finally:
        reward.close()


def test_trl_header_column_statement_mode_and_a_reward_table(target: str) -> None:
    reward = trl_reward(target=target, extract="statement", rewards={"VALID": 1.0, "SORRY": 0.25})
    try:
        completions = ["\n  trivial\n```", "\n  -- fake: sorry\n```", "\n  -- fake: error no\n"]
        got = reward(
            completions=completions,
            formal_statement=["theorem t : True := by"] * 3,
            header="import Mathlib",
            theorem_name=["t", "t", "t"],
        )
        assert got == [1.0, 0.25, 0.0]
        assert reward.last_infos[0].code == "import Mathlib\n\ntheorem t : True := by\n  trivial\n"
        assert reward(completions=["\n  trivial"], formal_statement=[STATEMENT], theorem_name=["u"]) == [0.0]
        assert reward.last_infos[0].reason == "no theorem named u"
    finally:
        reward.close()
    with pytest.raises(ValueError, match="unknown verdicts"):
        trl_reward(rewards={"PASS": 1.0})


def test_extraction_takes_the_last_block_and_never_raises_past_unparsable() -> None:
    two = "```lean\ndraft\n```\nbetter:\n```lean4\ntheorem t : True := trivial\n```"
    assert extract_lean(two) == "theorem t : True := trivial\n"
    for bad in (None, 42, [{"role": "assistant", "content": None}], "", [{"role": "user"}]):
        with pytest.raises(Unparsable):
            extract_lean(bad)


def test_verl_batch_and_per_sample_conventions(target: str) -> None:
    compute_score = verl_reward(target=target)
    try:
        calls = count_calls(compute_score.client._client, "StreamVerify")
        scores = compute_score(
            data_sources=["minif2f"] * 6,
            solution_strs=[
                block(),
                block("  -- fake: error e"),
                "no code",
                block(),
                block("  -- fake: sorry"),
                block(),
            ],
            ground_truths=[STATEMENT] * 6,
            extra_infos=[{"header": "import Mathlib"}] * 6,
        )
        assert calls["StreamVerify"] == 1
        assert [s["score"] for s in scores] == [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
        assert [s["verdict"] for s in scores] == ["VALID", "INVALID", UNPARSABLE, "VALID", "SORRY", "VALID"]
        assert all(set(s) == {"score", "verdict", "reason"} for s in scores)  # verl collects keys per batch
        one = compute_score("minif2f", block(), STATEMENT, {"index": 3})
        assert one == {"score": 1.0, "verdict": "VALID", "reason": ""}
        assert compute_score("minif2f", "no code", STATEMENT)["reason"].startswith("no ```lean4")
    finally:
        compute_score.close()


def test_verl_concurrent_per_sample_calls_share_streams(target: str) -> None:
    compute_score = verl_reward(target=target)
    try:
        calls = count_calls(compute_score.client._client, "StreamVerify")
        slow = block("  -- fake: sleep 0.5\n  trivial")
        start = threading.Barrier(16)

        def one(i: int) -> dict[str, Any]:
            start.wait()
            text = slow if i == 0 else block()
            return dict(compute_score(data_source="x", solution_str=text, ground_truth=STATEMENT))

        with ThreadPoolExecutor(16) as pool:
            scores = list(pool.map(one, range(16)))
        assert [s["score"] for s in scores] == [1.0] * 16
        assert calls["StreamVerify"] < 16  # callers that arrived while a check ran went together
    finally:
        compute_score.close()


def test_rewards_pickle_without_their_client(target: str) -> None:
    reward = verl_reward(target=target)
    try:
        assert reward("d", block(), STATEMENT)["score"] == 1.0
        again = pickle.loads(pickle.dumps(reward))
        assert again("d", block(), STATEMENT)["score"] == 1.0
        again.close()
    finally:
        reward.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_that_comes_up_late_still_answers_the_group() -> None:
    port = _free_port()
    reward = trl_reward(target=f"127.0.0.1:{port}")
    up = threading.Event()
    done = threading.Event()
    calls = count_calls(reward.client._client, "StreamVerify")

    def serve_later() -> None:
        # Once the reward call has begun and failed its first attempt.
        eventually_sync(lambda: calls["StreamVerify"] >= 2, what="the reward call refused and retrying")
        with serve_process({"LEAN_SERVER_PORT": str(port), "LEAN_SERVER_MAX_REPLS": "2"}):
            up.set()
            done.wait(60)

    server = threading.Thread(target=serve_later)
    server.start()
    try:
        rewards = reward(completions=[block(), block("  -- fake: error no")] * 4, formal_statement=STATEMENT)
        assert rewards == [1.0, 0.0] * 4
        assert up.is_set()
    finally:
        reward.close()
        done.set()
        server.join()


def test_a_server_that_stays_down_is_a_clear_error_after_bounded_retries() -> None:
    port = _free_port()
    reward = trl_reward(target=f"127.0.0.1:{port}", max_attempts=3)
    started = time.monotonic()
    try:
        with pytest.raises(RewardServerError, match=rf"127\.0\.0\.1:{port} could not check 2 completions.*UNAVAILABLE"):
            reward(completions=[block(), "no code", block()])
    finally:
        reward.close()
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        (
            "trl_reward.py",
            ["1.0  VALID", "0.0  INVALID     4:0: unsolved goals", "0.0  UNPARSABLE  no ```lean4", "1.0  VALID"],
        ),
        (
            "verl_reward.py",
            ["batch   1.0  VALID", "batch   0.0  SORRY", "batch   0.0  UNPARSABLE  no ```lean4", "single  1.0  VALID"],
        ),
    ],
)
def test_the_trainer_examples_run_without_their_trainer(target: str, example: str, expected: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "clients" / example), "--target", target],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == len(expected) and all(
        line.startswith(want) for line, want in zip(lines, expected, strict=True)
    ), run.stdout


def test_a_completion_the_server_refuses_scores_zero_and_leaves_the_group_alone(target: str) -> None:
    reward = trl_reward(target=target)
    try:
        huge = block("  trivial\n" + "-- padding\n" * 120_000)  # past LEAN_SERVER_MAX_CODE_BYTES (1 MiB)
        got = reward(completions=[block(), huge, b"bytes", [], block()], formal_statement=STATEMENT)
        assert got == [1.0, 0.0, 0.0, 0.0, 1.0]
        assert [i.verdict for i in reward.last_infos] == ["VALID", "NOT_CHECKED", UNPARSABLE, UNPARSABLE, "VALID"]
        assert reward.last_infos[1].reason == "invalid: proof.code: must be at most 1048576 bytes"
    finally:
        reward.close()


def some_answered(port: int) -> bool:
    """The server answered some proofs and still runs others."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        info = pb_grpc.VerifierServiceStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=5)
    return info.counters.completed >= 2 and any(h.busy for h in info.headers)


def test_a_server_restarted_mid_group_still_answers_every_completion_once() -> None:
    port = _free_port()
    env = {"LEAN_SERVER_PORT": str(port), "LEAN_SERVER_MAX_REPLS": "2"}
    reward = trl_reward(target=f"127.0.0.1:{port}")
    group = [block(f"  -- fake: sleep 0.4\n  -- {i}") for i in range(8)]
    restarted = threading.Event()
    finished = threading.Event()

    calls = count_calls(reward.client._client, "StreamVerify")

    def crash_and_restart(first: subprocess.Popen[str]) -> None:
        eventually_sync(lambda: some_answered(port), what="some answered, some in flight")
        first.kill()
        first.wait()
        # The client saw the server gone: its stream broke and it calls again (refused until the restart).
        eventually_sync(lambda: calls["StreamVerify"] >= 2, what="the client reconnecting")
        with serve_process(env):
            restarted.set()
            finished.wait(60)

    try:
        with serve_process(env) as (first, _):
            chaos = threading.Thread(target=crash_and_restart, args=(first,))
            chaos.start()
            rewards = reward(completions=group, formal_statement=STATEMENT)
        assert restarted.is_set()
        assert rewards == [1.0] * 8 and sorted(i.result.id for i in reward.last_infos if i.result) == [
            str(i) for i in range(8)
        ]
    finally:
        reward.close()
        finished.set()
        chaos.join()


TRUST_STATEMENT = "theorem t (x : ℕ) (h : 2 * x = 6) :\n  x = 3 := by sorry"
HONEST = "```lean4\nimport Mathlib\n\ntheorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := by omega\n```"
CHEAT = (
    "```lean4\nimport Mathlib\n\naxiom cheat : False\ntheorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := cheat.elim\n"
    "-- fake: axioms t cheat\n```"
)


@pytest.mark.parametrize("trust", ["audit", "judge"])
def test_trust_levels_send_each_proof_its_statement_and_theorem_name(target: str, trust: str) -> None:
    reward = trl_reward(target=target, trust=trust)
    try:
        got = reward(completions=[HONEST, CHEAT], formal_statement=[TRUST_STATEMENT] * 2, theorem_name=["t", "t"])
        assert got == [1.0, 0.0], [i.reason for i in reward.last_infos]
        assert [i.verdict for i in reward.last_infos] == ["VALID", "UNTRUSTED"]
        assert reward.last_infos[1].reason.startswith("axioms: t depends on cheat")
        # The name defaults to the one the statement declares.
        assert reward(completions=[HONEST], formal_statement=[TRUST_STATEMENT]) == [1.0]
    finally:
        reward.close()


def test_a_request_the_server_refuses_for_its_set_up_raises_instead_of_scoring_zero(target: str) -> None:
    reward = trl_reward(target=target, trust="audit")  # and no statement nor theorem name to audit
    try:
        with pytest.raises(ValueError, match=r"refused the request .*trust level audit needs theorem_name"):
            reward(completions=[HONEST, HONEST])
    finally:
        reward.close()


def test_reasoning_is_dropped_and_a_cut_off_answer_never_falls_back_to_a_draft() -> None:
    draft = "```lean4\ntheorem t : True := by\n  sorry\n```"
    final = "```lean4\ntheorem t : True := by\n  trivial\n```"
    assert extract_lean(f"<think>first {draft} then</think>\n{final}") == "theorem t : True := by\n  trivial\n"
    # The chat template opened <think> in the prompt: everything up to the last </think> is reasoning.
    assert extract_lean(f"hmm {draft}</think>\n{final}") == "theorem t : True := by\n  trivial\n"
    for cut in (
        f"<think>try {draft}</think>\n```lean4\ntheorem t : True := by\n  tri",  # answer cut off
        f"{final}\nOr shorter:\n```lean\ntheorem t : True := by\n  ",  # a second block cut off
        f"<think>try {draft} and more reasoning",  # cut off while reasoning
    ):
        with pytest.raises(Unparsable, match=r"not closed|after the reasoning"):
            extract_lean(cut)
    assert extract_lean(f'```lean4 title="proof"\n{final[9:]}') == "theorem t : True := by\n  trivial\n"


def test_the_statement_guard_reads_the_declaration_only() -> None:
    statement = (
        "import Mathlib\nimport Aesop\nset_option maxHeartbeats 400000\nopen BigOperators Real\n\n"
        "/-- The sum of $x$ and zero is $x$. -/\ntheorem add_zero' (x : ℕ) :\n  x + 0 = x := by sorry"
    )
    for code in (
        "theorem add_zero' (x : ℕ) : x + 0 = x := by\n  simp",  # no header, no docstring
        "lemma add_zero' (x : ℕ) : -- a comment\n  x + 0 = x := by simp",  # lemma, a comment inside
        "import Mathlib\n/- a note -/\n/-- doc -/ theorem add_zero' (x : ℕ) : x + 0 = x := by simp",
    ):
        assert extract_lean(f"```lean4\n{code}\n```", formal_statement=statement).startswith(code[:6])
    for changed in (
        "theorem add_zero' (x : ℕ) : x + 1 = x + 1 := by simp",
        "-- theorem add_zero' (x : ℕ) : x + 0 = x := by simp\ntheorem add_zero' : True := trivial",
    ):
        with pytest.raises(Unparsable, match="formal statement"):
            extract_lean(f"```lean4\n{changed}\n```", formal_statement=statement)


def test_one_string_is_one_completion_and_infra_failures_have_their_own_reward(target: str) -> None:
    reward = trl_reward(target=target, infra_reward=None)
    try:
        assert reward(completions=block()) == [1.0]
        crashed = block("  -- fake: crash")
        assert reward(completions=[block(), crashed, "no code"]) == [1.0, None, 0.0]
        assert reward.last_infos[1].verdict == "REPL_ERROR"
        huge = block("  trivial\n" + "-- padding\n" * 120_000)  # too long: the completion's fault
        assert reward(completions=[huge]) == [0.0]
    finally:
        reward.close()
    with pytest.raises(ValueError, match="window must be at least 1"):
        trl_reward(window=0)
    compute_score = verl_reward(target=target)
    try:
        with pytest.raises(ValueError, match="ground_truths has 2 values for 3 completions"):
            compute_score(data_sources=["x"] * 3, solution_strs=[block()] * 3, ground_truths=[STATEMENT] * 2)
    finally:
        compute_score.close()


def test_the_retry_budget_rides_out_a_pod_restart() -> None:
    from kimina_grpc.client._errors import reconnect_delay

    reward = trl_reward()
    assert sum(reconnect_delay(f) for f in range(1, reward.max_attempts)) >= 60
