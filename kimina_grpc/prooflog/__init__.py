"""The proof log (LEAN_SERVER_DATABASE_URL): every answered proof is a row in PostgreSQL or SQLite,
written off the request path (writer.py), spooled on disk while the database is away (spool.py), and
read back as a dataset (read.py, `kimina-grpc log export`). Kimina's `Proof` table, with the caller's
tags, the environment and the trust review on each row."""

from kimina_grpc.prooflog.record import Call
from kimina_grpc.prooflog.url import ProofLogError, Target, parse, redact
from kimina_grpc.prooflog.writer import LogState, ProofLog, Tuning

__all__ = ["Call", "LogState", "ProofLog", "ProofLogError", "Target", "Tuning", "parse", "redact"]
