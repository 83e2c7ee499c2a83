"""The log's columns and how a batch of rows splits over its three tables. No imports: the readers
(`kimina-grpc log export`, `load`) and the backends use it without the server's dependencies."""

from __future__ import annotations

from typing import Any

PROOF_COLUMNS = (
    "key",
    "proof_id",
    "request_id",
    "rpc",
    "tags",
    "code_hash",
    "verdict",
    "reason",
    "error",
    "messages",
    "sorries",
    "time_seconds",
    "review_seconds",
    "queue_seconds",
    "trust_level",
    "axioms",
    "environment",
    "from_cache",
    "shared_check",
    "server_version",
    "server_host",
    "repl_id",
    "received_at",
    "answered_at",
)
JSON_COLUMNS = frozenset({"tags", "messages", "sorries", "axioms"})
TIME_COLUMNS = ("received_at", "answered_at")


def tables(rows: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, tuple[str, str]], list[dict[str, Any]]]:
    """A batch as the three tables want it: headers by hash, codes by hash (header hash, code), and the
    proof rows with each key once (a batch replayed with a row twice inserts it once)."""
    headers: dict[str, str] = {}
    codes: dict[str, tuple[str, str]] = {}
    proofs: dict[str, dict[str, Any]] = {}
    for row in rows:
        headers[row["header_hash"]] = row["header"]
        codes[row["code_hash"]] = (row["header_hash"], row["code"])
        proofs.setdefault(row["key"], row)
    return headers, codes, list(proofs.values())
