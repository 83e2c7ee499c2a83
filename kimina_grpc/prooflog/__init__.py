"""The proof log (LEAN_SERVER_DATABASE_URL): every answered proof is a row in PostgreSQL or SQLite,
written off the request path (writer.py), spooled on disk while the database is away (spool.py), and
read back as a dataset (read.py, `kimina-grpc log export`). Kimina's `Proof` table, with the caller's
tags, the environment and the trust review on each row.

Nothing is imported here: the CLI's parser imports this package with the client's dependencies alone.
"""

from __future__ import annotations

from typing import Any


def load(url: str, **filters: Any) -> Any:
    """The log's rows as a `datasets.Dataset`: `load("postgresql://...", verdict="VALID",
    tags={"model": "m7"}, since=datetime(...))`. See `kimina_grpc.prooflog.read.load`."""
    from kimina_grpc.prooflog.read import load as _load

    return _load(url, **filters)
