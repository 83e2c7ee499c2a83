"""What a row holds, and how an answered proof becomes one. Pure: no I/O, no clock.

The servicer hands over an `Entry` (references only: nothing is computed on the request path); the
writer turns batches of them into rows (`encode`), plain JSON-able dicts that the spool keeps as they
are and the backends insert. `key` is the row's idempotent key: a row written twice (a spool replayed
after a write whose answer was lost) is stored once.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kimina_grpc.repl import split_header
from kimina_grpc.repl.protocol import Pos
from kimina_grpc.supervisor.jobs import Outcome, TrustPolicy
from kimina_grpc.v1 import verifier_pb2 as pb

_PROCESS = uuid.uuid4().hex[:20]
_SERIAL = itertools.count()


def new_key() -> str:
    """A row key unique over processes and restarts (a random prefix per process, then a counter):
    cheaper than a uuid4 per proof (no system call on the request path)."""
    return f"{_PROCESS}{next(_SERIAL):012x}"


@dataclass(frozen=True, slots=True)
class Call:
    """The RPC a proof came in: its name, the id its log lines carry, when it arrived, its tags."""

    rpc: str
    request_id: str
    received_at: float
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Entry:
    """One answered proof, as handed to the log."""

    call: Call
    proof: pb.Proof
    outcome: Outcome
    trust: TrustPolicy | None
    answered_at: float
    key: str = field(default_factory=new_key)


@dataclass(frozen=True, slots=True)
class Origin:
    """What every row of this server shares."""

    environment: str
    server_version: str
    server_host: str


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _pos(p: Pos | None) -> tuple[int | None, int | None]:
    return (None, None) if p is None else (p.line, p.column)


def encode(entry: Entry, origin: Origin) -> dict[str, Any]:
    """The row of `entry`, with its code and normalised header (stored apart, once per hash)."""
    outcome, proof = entry.outcome, entry.proof
    code = proof.code
    header = split_header(code).header
    messages, sorries = [], []
    if outcome.reply is not None:
        for m in outcome.reply.messages:
            (end_line, end_column) = _pos(m.end_pos)
            messages.append(
                {
                    "severity": m.severity.value,
                    "line": m.pos.line,
                    "column": m.pos.column,
                    "end_line": end_line,
                    "end_column": end_column,
                    "text": m.data,
                }
            )
        for s in outcome.reply.sorries:
            (line, column), (end_line, end_column) = _pos(s.pos), _pos(s.end_pos)
            sorries.append(
                {"line": line, "column": column, "end_line": end_line, "end_column": end_column, "goal": s.goal}
            )
    return {
        "key": entry.key,
        "proof_id": proof.id,
        "request_id": entry.call.request_id,
        "rpc": entry.call.rpc,
        "tags": {**entry.call.tags, **proof.tags},
        "code_hash": digest(code),
        "code": code,
        "header_hash": digest(header),
        "header": header,
        "verdict": outcome.verdict.name,
        "reason": outcome.reason,
        "error": outcome.error,
        "messages": messages,
        "sorries": sorries,
        "time_seconds": outcome.time_seconds,
        "review_seconds": outcome.review_seconds,
        "queue_seconds": outcome.queue_seconds,
        "trust_level": "CHECK" if entry.trust is None else entry.trust.level.name,
        "axioms": [[theorem, list(axioms)] for theorem, axioms in outcome.axioms],
        "environment": origin.environment,
        "from_cache": outcome.from_cache,
        "shared_check": outcome.shared,
        "server_version": origin.server_version,
        "server_host": origin.server_host,
        "repl_id": outcome.repl_id,
        "received_at": entry.call.received_at,
        "answered_at": entry.answered_at,
    }
