"""The two databases behind the log: PostgreSQL (psycopg 3, async; a batch is COPYed into a temporary
table and moved from there, headers and codes go as `unnest`ed arrays) and SQLite (the standard
library's driver in a worker thread). Both insert with `ON CONFLICT DO NOTHING` on the row's key: a
batch written twice is stored once.

`write` raises `Rejected` for a batch the database will never take (bad data), anything else for
"not now" (down, slow, restarted): the writer spools those and tries again later."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from typing import Any, Protocol

from kimina_grpc.database_url import Target
from kimina_grpc.prooflog import schema
from kimina_grpc.prooflog.columns import JSON_COLUMNS, PROOF_COLUMNS, tables

_LOCK_ID = 0x6B696D696E61  # pg_advisory_xact_lock: one migration at a time, over every replica


class Rejected(Exception):
    """The database refused the batch's data; writing it again would fail again."""


class Backend(Protocol):
    name: str

    async def connect(self) -> None: ...
    async def version(self) -> int: ...
    async def upgrade(self) -> list[int]: ...
    async def write(self, rows: list[dict[str, Any]]) -> int: ...
    async def delete_before(self, cutoff: float, limit: int) -> int: ...
    async def close(self) -> None: ...


def to_json(value: Any) -> str:
    """A JSON column's text (most are empty: no messages, no tags)."""
    if not value:
        return "[]" if isinstance(value, list) else "{}"
    return json.dumps(value, ensure_ascii=False)


def one_line(exc: BaseException) -> str:
    """A driver's (often multi-line) message as one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:400]


# ----------------------------------------------------------------------------------------- SQLite


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._conn = conn
        return self._conn

    def _run(self, work: Any) -> Any:
        with self._lock:
            conn = self._open()
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = work(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    async def connect(self) -> None:
        await asyncio.to_thread(self._run, lambda conn: None)

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (schema.VERSION_TABLE,)).fetchone() is None:
            return 0
        row = conn.execute(f"SELECT version FROM {schema.VERSION_TABLE}").fetchone()
        return int(row[0]) if row else 0

    async def version(self) -> int:
        return int(await asyncio.to_thread(self._run, self._version))

    async def upgrade(self) -> list[int]:
        def work(conn: sqlite3.Connection) -> list[int]:
            at = self._version(conn)
            conn.execute(f"CREATE TABLE IF NOT EXISTS {schema.VERSION_TABLE} (version INTEGER NOT NULL)")
            applied = []
            for version, sql in schema.migrations(self.name):
                if version > at:
                    for statement in schema.statements(sql):
                        conn.execute(statement)
                    applied.append(version)
            if applied:
                conn.execute(f"DELETE FROM {schema.VERSION_TABLE}")
                conn.execute(f"INSERT INTO {schema.VERSION_TABLE} (version) VALUES (?)", (applied[-1],))
            return applied

        result: list[int] = await asyncio.to_thread(self._run, work)
        return result

    async def write(self, rows: list[dict[str, Any]]) -> int:
        headers, codes, proofs = tables(rows)
        columns = ", ".join(PROOF_COLUMNS)
        marks = ", ".join("?" * len(PROOF_COLUMNS))
        values = [tuple(to_json(r[c]) if c in JSON_COLUMNS else r[c] for c in PROOF_COLUMNS) for r in proofs]

        def work(conn: sqlite3.Connection) -> int:
            conn.executemany("INSERT OR IGNORE INTO kimina_headers (hash, header) VALUES (?, ?)", headers.items())
            conn.executemany(
                "INSERT OR IGNORE INTO kimina_codes (hash, header_hash, code) VALUES (?, ?, ?)",
                [(h, hh, code) for h, (hh, code) in codes.items()],
            )
            before = conn.total_changes
            conn.executemany(f"INSERT OR IGNORE INTO kimina_proofs ({columns}) VALUES ({marks})", values)
            return conn.total_changes - before

        try:
            written: int = await asyncio.to_thread(self._run, work)
        except (sqlite3.DataError, sqlite3.ProgrammingError, sqlite3.InterfaceError) as exc:
            raise Rejected(one_line(exc)) from exc
        return written

    async def delete_before(self, cutoff: float, limit: int) -> int:
        """At most `limit` rows answered before `cutoff`; with the last of them, the code no row uses."""

        def work(conn: sqlite3.Connection) -> int:
            deleted = conn.execute(
                "DELETE FROM kimina_proofs WHERE rowid IN"
                " (SELECT rowid FROM kimina_proofs WHERE answered_at < ? LIMIT ?)",
                (cutoff, limit),
            ).rowcount
            if deleted < limit:
                conn.execute(
                    "DELETE FROM kimina_codes WHERE NOT EXISTS"
                    " (SELECT 1 FROM kimina_proofs p WHERE p.code_hash = kimina_codes.hash)"
                )
            return int(deleted)

        result: int = await asyncio.to_thread(self._run, work)
        return result

    async def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# ------------------------------------------------------------------------------------- PostgreSQL

_PG_TYPES = {
    "time_seconds": "float8",
    "review_seconds": "float8",
    "queue_seconds": "float8",
    "from_cache": "bool",
    "shared_check": "bool",
    "received_at": "float8",
    "answered_at": "float8",
}


_STAGE = "kimina_proofs_in"
"""A session's temporary table: a batch is COPYed in, then moved with ON CONFLICT DO NOTHING (COPY
alone cannot skip a key already there). Created in every transaction if missing, so a pooler that
hands out another session per transaction (PgBouncer) still works."""
_STAGE_CREATE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} ("
    + ", ".join(f"{c} {_PG_TYPES.get(c, 'text')}" for c in PROOF_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
_STAGE_COPY = f"COPY {_STAGE} ({', '.join(PROOF_COLUMNS)}) FROM STDIN"
_STAGE_MOVE = (
    f"INSERT INTO kimina_proofs ({', '.join(PROOF_COLUMNS)}) SELECT "
    + ", ".join(
        f"{c}::jsonb" if c in JSON_COLUMNS else f"to_timestamp({c})" if c.endswith("_at") else c for c in PROOF_COLUMNS
    )
    + f" FROM {_STAGE} ON CONFLICT (key) DO NOTHING"
)


def _text(value: Any) -> Any:
    """PostgreSQL's text and jsonb hold no NUL character (not even as a JSON `\\u0000`): it becomes
    U+FFFD, in strings nested in lists and dicts too."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    return value


class PostgresBackend:
    name = "postgresql"

    def __init__(self, dsn: str, password: str | None, timeout: float) -> None:
        self.dsn = dsn
        self.password = password
        self.timeout = timeout
        self._conn: Any = None

    async def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                await self._drop()
            extra: dict[str, Any] = {"connect_timeout": max(1, round(self.timeout))}
            if self.password is not None:
                extra["password"] = self.password
            self._conn = await psycopg.AsyncConnection.connect(self.dsn, **extra)
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a dead connection may fail to close: it is gone either way
                await conn.close()

    async def _run(self, work: Any) -> Any:
        import psycopg

        try:
            conn = await self._connection()
            async with conn.transaction(), conn.cursor() as cur:
                return await work(cur)
        except (psycopg.DataError, psycopg.ProgrammingError) as exc:
            raise Rejected(one_line(exc)) from exc
        except BaseException:
            await self._drop()  # reconnect next time: the server may have restarted
            raise

    async def connect(self) -> None:
        await self._connection()

    async def version(self) -> int:
        async def work(cur: Any) -> int:
            await cur.execute("SELECT to_regclass(%s)", (schema.VERSION_TABLE,))
            if (await cur.fetchone())[0] is None:
                return 0
            await cur.execute(f"SELECT version FROM {schema.VERSION_TABLE}")
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return int(await self._run(work))

    async def upgrade(self) -> list[int]:
        async def work(cur: Any) -> list[int]:
            await cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            await cur.execute(f"CREATE TABLE IF NOT EXISTS {schema.VERSION_TABLE} (version INTEGER NOT NULL)")
            await cur.execute(f"SELECT version FROM {schema.VERSION_TABLE}")
            row = await cur.fetchone()
            at = int(row[0]) if row else 0
            applied = []
            for version, sql in schema.migrations(self.name):
                if version > at:
                    for statement in schema.statements(sql):
                        await cur.execute(statement)
                    applied.append(version)
            if applied:
                await cur.execute(f"DELETE FROM {schema.VERSION_TABLE}")
                await cur.execute(f"INSERT INTO {schema.VERSION_TABLE} (version) VALUES (%s)", (applied[-1],))
            return applied

        result: list[int] = await self._run(work)
        return result

    async def write(self, rows: list[dict[str, Any]]) -> int:
        headers, codes, proofs = tables(rows)
        values = [[to_json(_text(r[c])) if c in JSON_COLUMNS else _text(r[c]) for c in PROOF_COLUMNS] for r in proofs]

        async def work(cur: Any) -> int:
            await cur.execute(
                "INSERT INTO kimina_headers (hash, header) SELECT * FROM unnest(%s::text[], %s::text[])"
                " ON CONFLICT DO NOTHING",
                (list(headers), [_text(h) for h in headers.values()]),
            )
            await cur.execute(
                "INSERT INTO kimina_codes (hash, header_hash, code)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING",
                (list(codes), [hh for hh, _ in codes.values()], [_text(c) for _, c in codes.values()]),
            )
            await cur.execute(_STAGE_CREATE)
            async with cur.copy(_STAGE_COPY) as copy:
                for row in values:
                    await copy.write_row(row)
            await cur.execute(_STAGE_MOVE)
            return int(cur.rowcount)

        return int(await self._run(work))

    async def delete_before(self, cutoff: float, limit: int) -> int:
        async def work(cur: Any) -> int:
            await cur.execute(
                "DELETE FROM kimina_proofs WHERE key IN"
                " (SELECT key FROM kimina_proofs WHERE answered_at < to_timestamp(%s) LIMIT %s)",
                (cutoff, limit),
            )
            deleted = int(cur.rowcount)
            if deleted < limit:
                await cur.execute(
                    "DELETE FROM kimina_codes c WHERE NOT EXISTS"
                    " (SELECT 1 FROM kimina_proofs p WHERE p.code_hash = c.hash)"
                )
            return deleted

        return int(await self._run(work))

    async def close(self) -> None:
        await self._drop()


def backend_for(target: Target, timeout: float) -> Backend:
    if target.backend == "postgresql":
        return PostgresBackend(target.dsn, target.password, timeout)
    return SqliteBackend(target.dsn, timeout)
