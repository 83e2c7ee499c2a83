"""The REPL's recorded tactic-mode transcripts through the session API: each one's REPL replies
(answered by a stand-in table built from the recording) come back through ProofSession with the
same goals, messages and statuses, the REPL's state ids mapped to the session's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kimina_grpc.repl import split_header
from kimina_grpc.testing import fake_repl_command
from kimina_grpc.v1 import verifier_pb2 as pb

from .test_fake_tactics import recorded, tactic_transcripts
from .test_server import running
from .test_sessions import Raw


def as_session(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The transcript with an imports-only first command folded into the next (`env` 0): the
    session's code is one file, the server splits the header off itself."""
    requests, replies = recorded(path)
    if (
        len(requests) >= 2
        and set(requests[0]) == {"cmd"}
        and not split_header(requests[0]["cmd"]).body.strip()
        and requests[1].get("env") == 0
        and set(requests[1]) == {"cmd", "env"}
    ):
        return [{"cmd": requests[0]["cmd"] + "\n" + requests[1]["cmd"]}, *requests[2:]], replies[1:]
    return requests, replies


def session_shaped(path: Path) -> bool:
    """One command without `env` (the statement), then tactic requests only, all answered."""
    requests, replies = as_session(path)
    return (
        len(replies) >= len(requests) >= 2
        and "cmd" in requests[0]
        and "env" not in requests[0]
        and set(requests[0]) == {"cmd"}
        and all(set(r) == {"tactic", "proofState"} for r in requests[1:])
        and bool(replies[0].get("sorries"))
    )


SHAPED = [p for p in tactic_transcripts() if session_shaped(p)]


def test_most_tactic_transcripts_are_session_shaped() -> None:
    excluded = sorted(p.stem for p in tactic_transcripts() if p not in SHAPED)
    print(f"\n{len(SHAPED)} of 34 tactic transcripts through sessions; not session-shaped: {excluded}")
    assert len(SHAPED) >= 15


def table(path: Path, into: Path) -> Path:
    """The stand-in's table for one transcript, as the server asks it: the header on its own, the
    body on the header's environment, then the tactics."""
    requests, replies = as_session(path)
    split = split_header(requests[0]["cmd"])
    rows: list[dict[str, Any]] = [
        {"request": {"cmd": split.header}, "reply": {"env": 0}},
        {"request": {"cmd": split.body, "env": 0}, "reply": {**replies[0], "env": 1}},
    ]
    rows += [{"request": q, "reply": a} for q, a in zip(requests[1:], replies[1:], strict=False)]
    into.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return into


STATUS = {"Completed": pb.TACTIC_STATUS_PROOF_COMPLETE}


@pytest.mark.parametrize("path", SHAPED, ids=lambda p: p.stem)
async def test_transcript_through_the_session_api(path: Path, tmp_path: Path) -> None:
    requests, replies = as_session(path)
    command = fake_repl_command("--table", str(table(path, tmp_path / "table.jsonl")))
    async with running(repl_command=command) as (_, ch):
        s = Raw(ch)
        opened = await s.open(code=requests[0]["cmd"])
        ids = {x["proofState"]: o.state for x, o in zip(replies[0]["sorries"], opened.states, strict=True)}
        assert [o.goal for o in opened.states] == [x["goal"] for x in replies[0]["sorries"]]
        for k, (request, reply) in enumerate(zip(requests[1:], replies[1:], strict=False)):
            if request["proofState"] not in ids:
                continue  # a state the REPL never gave (the transcript asks for an unknown one)
            got = await s.run(ids[request["proofState"]], request["tactic"], rid=f"r{k}")
            if "message" in reply:
                assert got.status == pb.TACTIC_STATUS_ERROR and got.error == reply["message"] and got.state == 0
                continue
            ids[reply["proofState"]] = got.state
            for x in reply.get("sorries", []):  # a `sorry` tactic's own state is the REPL's, not the session's
                ids.pop(x["proofState"], None)
            assert list(got.goals) == reply["goals"]
            assert [m.text for m in got.messages] == [m["data"] for m in reply.get("messages", [])]
            errors = any(m["severity"] == "error" for m in reply.get("messages", []))
            expected = (
                pb.TACTIC_STATUS_ERROR if errors else STATUS.get(reply["proofStatus"], pb.TACTIC_STATUS_INCOMPLETE)
            )
            assert got.status == expected
        assert len(set(ids.values())) == len(ids)  # distinct states have distinct session ids
        await s.close()
