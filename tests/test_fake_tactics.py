"""The stand-in's tactic mode against the REPL's 34 recorded tactic-mode transcripts.

Two ways: the stand-in's replay answers them byte for byte through the driver; and its simulator,
told by directives only what Lean computed (the goals after each tactic, a tactic's error), gives
the recorded reply exactly: state numbering shared with `sorry`s, key order, status strings,
`sorries` of a `sorry` tactic, "Unknown proof state.", parse errors, the goal of a command's
`sorry` read from its declaration.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kimina_grpc.repl import Repl, ReplSpec
from kimina_grpc.testing import fake_repl_command
from kimina_grpc.testing.fake_repl import chunks

from .helpers.paths import TRANSCRIPTS
from .helpers.transcripts import recorded, tactic_transcripts


def test_there_are_34_tactic_transcripts() -> None:
    assert len(tactic_transcripts()) == 34


@pytest.mark.parametrize("path", tactic_transcripts(), ids=lambda p: p.stem)
async def test_replay_answers_tactic_transcripts_byte_for_byte(path: Path) -> None:
    out = path.with_name(path.name[:-3] + ".expected.out")
    if not out.exists():
        pytest.skip("no recorded reply upstream")
    expected = [e.lstrip(b"\n") for e in out.read_bytes().split(b"\n\n") if e.strip()]
    requests, _ = recorded(path)
    argv = tuple(fake_repl_command("--replay", str(TRANSCRIPTS)).split())
    repl = await Repl.start(ReplSpec(argv=argv), "replay")
    try:
        for request, reply in zip(requests, expected, strict=False):
            raw = await repl.request(json.dumps(request, ensure_ascii=False).encode() + b"\n\n")
            assert raw == reply
    finally:
        await repl.kill()


UNMODELLED_STATUS = ("Incomplete: contains metavariable(s)", "Error:")


def directives(reply: dict[str, Any], before: list[str]) -> list[str] | None:
    """The directive lines that tell the stand-in what Lean computed for a tactic's `reply`, from
    the state with goals `before`; None when the stand-in does not model it (traces, info
    messages, metavariables, the kernel check, a `have := by sorry`)."""
    if "message" in reply:
        text = reply["message"]
        prefix = "Lean error:\n<input>:1:1: "
        if text == "Unknown proof state.":
            return []
        return (
            [f"-- fake: parse-error {text[len(prefix) :]}"]
            if text.startswith(prefix) and "\n" not in text[len(prefix) :]
            else None
        )
    if "traces" in reply or reply["proofStatus"].startswith(UNMODELLED_STATUS):
        return None
    messages = reply.get("messages", [])
    if any(m["severity"] != "error" or "\n" in m["data"] for m in messages):
        return None
    if messages:
        return [f"-- fake: error {m['data']}" for m in messages]
    if "sorries" in reply:
        return None
    after = reply["goals"]
    rest = before[1:]
    if len(after) < len(rest) or after[len(after) - len(rest) :] != rest or not before:
        return None
    new = after[: len(after) - len(rest)]
    return ["-- fake: goals " + " || ".join(g.replace("\n", "\\n") for g in new)] if new else ["-- fake: done"]


def simulate(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n\n" for r in requests)
    out = subprocess.run(
        [sys.executable, "-m", "kimina_grpc.testing.fake_repl"], input=text.encode(), capture_output=True, check=False
    )
    return [json.loads(b) for b in chunks(out.stdout.decode())]


def test_simulator_gives_the_recorded_tactic_replies_when_told_the_goals() -> None:
    compared = exact = goals_checked = 0
    for path in tactic_transcripts():
        requests, replies = recorded(path)
        goals: dict[int, list[str]] = {}
        sent: list[dict[str, Any]] = []
        checks: list[int] = []
        for request, reply in zip(requests, replies, strict=False):
            if "tactic" not in request and "cmd" not in request:
                break  # pickled proof states: not modelled
            if "cmd" in request:
                for s in reply.get("sorries", []):
                    goals[s["proofState"]] = [s["goal"]]
                sent.append(request)
                continue
            lines = directives(reply, goals.get(request["proofState"], []))
            if lines is None:
                break  # past here the numbering would differ
            for s in reply.get("sorries", []):
                goals[s["proofState"]] = [s["goal"]]
            if "proofState" in reply:
                goals[reply["proofState"]] = reply["goals"]
            checks.append(len(sent))
            sent.append({**request, "tactic": "\n".join([request["tactic"], *lines])})
        answers = simulate(sent)
        ids = [[x["proofState"] for x in a.get("sorries", [])] for a in answers]
        if any(
            ids[k] != [x["proofState"] for x in replies[k].get("sorries", [])] for k, r in enumerate(sent) if "cmd" in r
        ):
            continue  # sorries the stand-in cannot see (`rootGoals`, term-mode holes): states numbered apart
        for k in checks:
            compared += 1
            assert answers[k] == replies[k], (path.stem, sent[k])
            exact += 1
        notation = path.stem.startswith("Mathlib")  # Mathlib prints `Nat` as `ℕ`
        for k, request in enumerate(sent):  # a command's sorry: its id and its goal, from the declaration
            if (
                "cmd" in request
                and not notation
                and replies[k].get("sorries")
                and "⊢ False" not in answers[k]["sorries"][0]["goal"]
            ):
                goals_checked += 1
                assert answers[k]["sorries"] == [
                    {**s, "pos": a["pos"], "endPos": a["endPos"]}
                    for s, a in zip(replies[k]["sorries"], answers[k]["sorries"], strict=True)
                ]
    print(f"\n{exact} tactic replies equal the recording; {goals_checked} sorry goals read from declarations")
    assert exact >= 30 and goals_checked >= 10
