"""The versioned schema: plain SQL files, `migrations/NNNN_name.BACKEND.sql`, applied in order. The
database records the version it is at (table kimina_schema); `kimina-grpc db upgrade` (or
LEAN_SERVER_DATABASE_MIGRATE=true at start) applies what is missing, all in one transaction."""

from __future__ import annotations

import importlib.resources
import re

VERSION_TABLE = "kimina_schema"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.(postgresql|sqlite)\.sql$")


def migrations(backend: str) -> list[tuple[int, str]]:
    """(version, SQL) of every migration of `backend`, in order."""
    found = []
    for item in importlib.resources.files("kimina_grpc.prooflog").joinpath("migrations").iterdir():
        m = _NAME.match(item.name)
        if m and m.group(2) == backend:
            found.append((int(m.group(1)), item.read_text(encoding="utf-8")))
    return sorted(found)


def head(backend: str) -> int:
    """The version this server writes."""
    return max(v for v, _ in migrations(backend))


def statements(sql: str) -> list[str]:
    """A migration's statements (`;` at a line's end ends one; `--` lines are comments)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";")]
