"""The REPL's recorded tactic-mode transcripts through the session API: each one's REPL replies
(answered by a stand-in table built from the recording) come back through ProofSession with the
same goals, messages and statuses, the REPL's state ids mapped to the session's.

A transcript is read as a series of openings: each command (on a fresh environment, or on the
environment of an imports-only first command, whose imports become the opening's header) opens a
session of its own, and each tactic runs on the session whose opening (or earlier tactic) made its
proof state. What a session cannot express is listed, with the reason, in `NOT_EXPRESSIBLE`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from kimina_grpc.repl import split_header
from kimina_grpc.testing import fake_repl_command
from kimina_grpc.v1 import verifier_pb2 as pb

from .test_fake_tactics import recorded, tactic_transcripts
from .test_server import running
from .test_sessions import Raw

UNKNOWN = "Unknown proof state."
INNER = (
    "runs a tactic on the state of a `sorry` inside an earlier tactic (`have h : p := by sorry`): a"
    " session answers a tactic with its resulting state only"
)


@dataclass
class Plan:
    """A transcript as session requests: ("open", code, reply) and ("run", request, reply)."""

    steps: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)
    why_not: str = ""


def plan(path: Path) -> Plan:
    requests, replies = recorded(path)
    out = Plan()
    if len(replies) < len(requests):
        out.why_not = "no recorded reply for every request"
        return out
    header = ""
    if requests and set(requests[0]) == {"cmd"} and not split_header(requests[0]["cmd"]).body.strip():
        header, requests, replies = requests[0]["cmd"], requests[1:], replies[1:]
    owned: set[int] = set()  # the REPL's proof states a session holds
    refused: set[int] = set()  # those of a command a session does not open (Lean's errors)
    inner: set[int] = set()  # those of a `sorry` inside a tactic (the session gives the tactic's own)
    for q, a in zip(requests, replies, strict=False):
        keys = set(q)
        if keys & {"pickleTo", "unpickleProofStateFrom"}:
            out.why_not = "pickles proof states (a session keeps its states in its REPL; its moves replay them)"
        elif "rootGoals" in q:
            out.why_not = "opens goals from `rootGoals` (a statement with no `sorry`): a session opens at `sorry`s"
        elif "allTactics" in q:
            out.why_not = "asks a command for `allTactics` (the tactics of a whole proof): that is Verify's option"
        elif "cmd" in q and keys not in ({"cmd"}, {"cmd", "env"}):
            out.why_not = f"a command with {sorted(keys - {'cmd', 'env'})}"
        elif "cmd" in q and q.get("env") not in (None, 0) or ("env" in q and not header):
            out.why_not = "chains a command on an earlier command's environment (a session opens one file)"
        elif "cmd" in q:
            states = {s["proofState"] for s in a.get("sorries", [])}
            if any(m["severity"] == "error" for m in a.get("messages", [])):
                refused |= states
            else:
                owned |= states
            code = q["cmd"] if "env" not in q else header + "\n" + q["cmd"]
            out.steps.append(("open", code, a))
        elif q.get("proofState") in owned:
            out.steps.append(("run", q, a))
            if "proofState" in a:
                owned.add(a["proofState"])
            inner |= {x["proofState"] for x in a.get("sorries", [])}
        elif q.get("proofState") in inner:
            out.why_not = INNER
        elif q.get("proofState") in refused:
            out.why_not = (
                "runs tactics on the `sorry` of a command with an error: a session opens only code Lean accepts"
            )
        elif a.get("message") != UNKNOWN:
            out.why_not = "runs a tactic on a proof state no opening made"
        if out.why_not:
            return out
    if not any(kind == "run" for kind, *_ in out.steps):
        out.why_not = "runs no tactic on a state an opening made"
    return out


PLANS = {p: plan(p) for p in tactic_transcripts()}
EXPRESSIBLE = [p for p, x in PLANS.items() if not x.why_not]

PICKLES = "pickles proof states (a session keeps its states in its REPL; its moves replay them)"
ROOT_GOALS = "opens goals from `rootGoals` (a statement with no `sorry`): a session opens at `sorry`s"
CHAINS = "chains a command on an earlier command's environment (a session opens one file)"
ERROR_SORRY = "runs tactics on the `sorry` of a command with an error: a session opens only code Lean accepts"
ALL_TACTICS = "asks a command for `allTactics` (the tactics of a whole proof): that is Verify's option"
NOT_EXPRESSIBLE = {
    "Mathlib__test__H20231214": "no recorded reply for every request",
    "Mathlib__test__on_goal": CHAINS,  # `open Real` after the imports, then a command on its env
    "Mathlib__test__pickle_2": PICKLES,
    "all_tactics-20250622": ALL_TACTICS,
    "app_type_mismatch2": INNER,
    "have_by_sorry": ERROR_SORRY,
    "name_generator": INNER,
    "pickle_proof_state_1": PICKLES,
    "pickle_proof_state_2": PICKLES,
    "pickle_proof_state_env": PICKLES,
    "root_goals": ROOT_GOALS,
    "self_proof_check": ALL_TACTICS,
    "trace_simp": CHAINS,
    "unknown_proof_state": "runs no tactic on a state an opening made",  # only unknown states
}


def test_every_tactic_transcript_a_session_cannot_express_says_why() -> None:
    got = {p.stem: x.why_not for p, x in PLANS.items() if x.why_not}
    print(f"\n{len(EXPRESSIBLE)} of {len(PLANS)} tactic transcripts through sessions; not: {got}")
    assert got == NOT_EXPRESSIBLE


def table(steps: list[tuple[str, Any, dict[str, Any]]], into: Path) -> Path:
    """The stand-in's table, as the server asks it: each opening's header on its own, its body on
    the header's environment, then the tactics."""
    rows: list[dict[str, Any]] = []
    envs: dict[str, int] = {}  # the openings of a header share its REPL, which numbers their envs
    for kind, q, a in steps:
        if kind == "open":
            split = split_header(q)
            envs[split.header] = envs.get(split.header, 0) + 1
            rows.append({"request": {"cmd": split.header}, "reply": {"env": 0}})
            rows.append({"request": {"cmd": split.body, "env": 0}, "reply": {**a, "env": envs[split.header]}})
        else:
            rows.append({"request": q, "reply": a})
    into.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return into


STATUS = {"Completed": pb.TACTIC_STATUS_PROOF_COMPLETE}


@pytest.mark.parametrize("path", EXPRESSIBLE, ids=lambda p: p.stem)
async def test_transcript_through_the_session_api(path: Path, tmp_path: Path) -> None:
    steps = PLANS[path].steps
    command = fake_repl_command("--table", str(table(steps, tmp_path / "table.jsonl")))
    async with running(repl_command=command) as (_, ch):
        ids: dict[int, tuple[Raw, int]] = {}  # the REPL's proof state -> its session and id there
        sessions: list[Raw] = []
        for k, (kind, q, reply) in enumerate(steps):
            if kind == "open":
                s = Raw(ch)
                if not reply.get("sorries") or any(m["severity"] == "error" for m in reply.get("messages", [])):
                    with pytest.raises(grpc.aio.AioRpcError) as err:  # no state to start from
                        await s.open(code=q)
                    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                    continue
                sessions.append(s)
                opened = await s.open(code=q)
                assert [o.goal for o in opened.states] == [x["goal"] for x in reply["sorries"]]
                ids |= {x["proofState"]: (s, o.state) for x, o in zip(reply["sorries"], opened.states, strict=True)}
                continue
            if q["proofState"] not in ids:
                continue  # a state the REPL never gave (the transcript asks for an unknown one)
            s, state = ids[q["proofState"]]
            got = await s.run(state, q["tactic"], rid=f"r{k}")
            if "message" in reply:
                assert got.status == pb.TACTIC_STATUS_ERROR and got.error == reply["message"] and got.state == 0
                continue
            ids[reply["proofState"]] = (s, got.state)
            for x in reply.get("sorries", []):  # a `sorry` tactic's own state is the REPL's, not the session's
                ids.pop(x["proofState"], None)
            assert list(got.goals) == reply["goals"]
            assert [m.text for m in got.messages] == [m["data"] for m in reply.get("messages", [])]
            # An error message, or a newer REPL's kernel check of a finished proof failing.
            errors = any(m["severity"] == "error" for m in reply.get("messages", []))
            errors |= str(reply.get("proofStatus", "")).startswith("Error")
            expected = (
                pb.TACTIC_STATUS_ERROR if errors else STATUS.get(reply["proofStatus"], pb.TACTIC_STATUS_INCOMPLETE)
            )
            assert got.status == expected
        assert len(set(ids.values())) == len(ids)  # distinct states have distinct session ids
        for s in sessions:
            await s.close()
