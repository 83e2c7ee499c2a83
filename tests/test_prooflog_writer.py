"""The log's writer against a stand-in database: what it does with a row the database rejects, and
with the rows it holds when the server stops while the database is away."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from kimina_grpc.database_url import parse
from kimina_grpc.prooflog.backends import Rejected, SqliteBackend
from kimina_grpc.prooflog.record import Call, Entry, Origin, encode
from kimina_grpc.prooflog.spool import Spool
from kimina_grpc.prooflog.writer import ProofLog, Tuning
from kimina_grpc.repl import Verdict
from kimina_grpc.supervisor.jobs import Outcome
from kimina_grpc.v1 import verifier_pb2 as pb

from .helpers import eventually


class Stand:
    """A database that rejects any batch holding a proof whose id starts with "bad", or is down."""

    name = "sqlite"

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.rows: dict[str, dict[str, Any]] = {}

    async def connect(self) -> None: ...

    async def version(self) -> int:
        return 1

    async def upgrade(self) -> list[int]:
        return []

    async def write(self, rows: list[dict[str, Any]]) -> int:
        if self.down:
            raise ConnectionError("down")
        if any(r["proof_id"].startswith("bad") for r in rows):
            raise Rejected("bad data")
        new = [r for r in rows if r["key"] not in self.rows]
        self.rows.update((r["key"], r) for r in new)
        return len(new)

    async def delete_before(self, cutoff: float, limit: int) -> int:
        return 0

    async def close(self) -> None: ...


def _log(db: Stand, tmp_path: Path) -> ProofLog:
    tuning = Tuning(batch_size=50, flush_seconds=0.02, timeout=1.0, retry_seconds=60)
    return ProofLog(db, Spool(tmp_path / "spool", 1 << 20), Origin("env", "v", "host"), "stand-in", tuning)


def _record(log: ProofLog, ids: list[str]) -> None:
    call = Call("Verify", "r", time.time())
    for pid in ids:
        log.record(call, pb.Proof(id=pid, code="theorem t : True := trivial"), Outcome(Verdict.VALID), None)


async def test_a_rejected_row_costs_only_itself_not_its_batch(tmp_path: Path) -> None:
    db = Stand()
    log = _log(db, tmp_path)
    await log.start()
    _record(log, [f"ok{i}" for i in range(10)] + ["bad"] + [f"ok{i}" for i in range(10, 20)])
    await eventually(lambda: log.state().written == 20 and log.state().dropped == 1)
    await log.close()
    assert sorted(r["proof_id"] for r in db.rows.values()) == sorted(f"ok{i}" for i in range(20))


async def test_stopping_while_the_database_is_down_spools_every_row_for_the_next_start(tmp_path: Path) -> None:
    db = Stand(down=True)
    log = _log(db, tmp_path)
    await log.start()
    _record(log, [f"p{i}" for i in range(120)])
    await log.close()
    assert (log.state().spooled, log.state().written, log.state().dropped) == (120, 0, 0)
    db.down = False
    again = _log(db, tmp_path)
    await again.start()
    await eventually(lambda: again.state().spooled == 0)
    await again.close()
    assert (again.state().written, len(db.rows)) == (120, 120)


def test_the_password_is_never_shown() -> None:
    for url in (
        "postgresql://u:hunter2@h:5432/db",
        "postgresql://u:hunter2@h:5432/db?sslmode=require&password=hunter2",
        "postgresql://h/db?PASSWORD=hunter2",
        "postgres://u:hunter2@h/db",
    ):
        target = parse(url, "from-file")
        assert "hunter2" not in target.shown and "***" in target.shown
        assert target.password is None  # the URL's password wins over the file's
    with pytest.raises(ValueError, match="LEAN_SERVER_DATABASE_URL") as err:
        parse("mysql://u:hunter2@h/db")
    assert "hunter2" not in str(err.value)
    assert parse("postgresql://u@h/db", "from-file").password == "from-file"
    assert parse("sqlite:////var/log.db").dsn == "/var/log.db" and parse("sqlite:///log.db").dsn == "log.db"


async def test_the_in_memory_queue_is_bounded_in_bytes_too(tmp_path: Path) -> None:
    """Rows wait in memory with their code (up to 1 MiB each): a row count alone would let a slow
    database hold gigabytes."""
    log = ProofLog(
        Stand(), Spool(tmp_path / "spool", 1 << 20), Origin("e", "v", "h"), "stand-in", Tuning(max_pending_bytes=10_000)
    )
    call = Call("Verify", "r", time.time())
    for i in range(5):  # not started: nothing is written, every row waits
        log.record(call, pb.Proof(id=f"big{i}", code="x" * 4000), Outcome(Verdict.VALID), None)
    assert (log.state().pending, log.state().dropped) == (2, 3)


async def test_retention_deletes_in_chunks_and_then_the_unused_code(tmp_path: Path) -> None:
    """A sweep deletes at most a chunk (the writer's batches wait meanwhile), the code no row uses
    goes with the last chunk."""
    db = SqliteBackend(str(tmp_path / "log.db"), 5.0)
    await db.connect()
    await db.upgrade()
    now = time.time()
    old = [
        encode(
            Entry(
                Call("Verify", "r", now), pb.Proof(id=f"o{i}", code=f"-- {i}"), Outcome(Verdict.VALID), None, now - 100
            ),
            Origin("e", "v", "h"),
        )
        for i in range(25)
    ]
    assert await db.write(old) == 25
    assert [await db.delete_before(now - 50, 10) for _ in range(4)] == [10, 10, 5, 0]
    assert await db.delete_before(now, 10) == 0
    await db.close()
    with sqlite3.connect(tmp_path / "log.db") as conn:
        assert conn.execute("SELECT count(*) FROM kimina_codes").fetchone() == (0,)
