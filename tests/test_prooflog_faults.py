"""The proof log never costs a verdict: PostgreSQL stopped mid-run, the server SIGKILLed with rows
spooled, and a database that cannot be used at start (one line naming the variable, no password)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kimina_grpc.testing import fake_repl_command, free_port, serve_process
from kimina_grpc.testing.postgres import PASSWORD, PostgresServer, postgres_server
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually, eventually_sync
from .helpers.prooflog import code, count, rows, stream, verdict
from .helpers.server import running


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "db-password"
    path.write_text(PASSWORD + "\n")
    return path


async def test_postgres_stopped_mid_run_no_proof_waits_rows_arrive_after_restart_once(
    pg: PostgresServer, tmp_path: Path, password_file: Path
) -> None:
    url = pg.create_database("stopped_mid_run")
    settings = {
        "database_url": url,
        "database_password_file": password_file,
        "database_migrate": True,
        "database_timeout": 1.0,
        "database_retry_seconds": 0.3,
        "log_spool_dir": tmp_path / "spool",
        "log_flush_seconds": 0.02,
        "log_batch_size": 20,
        "stream_window": 16,
    }
    work = [pb.Proof(id=f"m{i}", code=code(i), tags={"problem": f"p{i}"}) for i in range(600)]
    async with running(**settings) as (app, ch):
        log = app.prooflog
        assert log is not None
        stub = pb_grpc.VerifierServiceStub(ch)
        task = asyncio.create_task(stream(stub, work))
        await eventually(lambda: log.state().written >= 100, what="rows written before the stop")
        await asyncio.to_thread(pg.stop)
        got = await task  # while the database is down: no proof waits on it
        assert got == {p.id: getattr(pb, f"VERDICT_{verdict(i)}") for i, p in enumerate(work)}
        await eventually(lambda: not log.state().up and log.state().spooled > 0, what="rows spooled")
        assert log.state().written < 600
        info = await stub.GetServerInfo(pb.GetServerInfoRequest())
        assert not info.proof_log.up and info.proof_log.spooled > 0 and info.proof_log.lag_seconds > 0
        assert PASSWORD not in info.proof_log.last_error
        await asyncio.to_thread(pg.start)
        await eventually(lambda: log.state().spooled == 0 and log.state().pending == 0, what="spool written back")
        assert (log.state().written, log.state().dropped, log.state().up) == (600, 0, True)
    got_rows = rows(url)
    assert len(got_rows) == 600 and sorted(r["proof_id"] for r in got_rows) == sorted(p.id for p in work)


def _info(port: int) -> pb.GetServerInfoResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        return pb_grpc.VerifierServiceStub(ch).GetServerInfo(pb.GetServerInfoRequest(), timeout=10)


def test_server_killed_with_rows_spooled_writes_them_on_next_start(
    pg: PostgresServer, tmp_path: Path, password_file: Path
) -> None:
    url = pg.create_database("killed_spooled")
    env = {
        "LEAN_SERVER_DATABASE_URL": url,
        "LEAN_SERVER_DATABASE_PASSWORD_FILE": str(password_file),
        "LEAN_SERVER_DATABASE_MIGRATE": "true",
        "LEAN_SERVER_DATABASE_TIMEOUT": "1",
        "LEAN_SERVER_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        "LEAN_SERVER_LOG_FLUSH_SECONDS": "0.02",
    }
    work = [pb.Proof(id=f"k{i}", code=code(i)) for i in range(40)]
    try:
        with serve_process(env) as (proc, port):
            pg.stop()
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                reply = pb_grpc.VerifierServiceStub(ch).Verify(pb.VerifyRequest(proofs=work), timeout=60)
            assert len(reply.results) == 40
            eventually_sync(lambda: _info(port).proof_log.spooled == 40, what="40 rows spooled")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        pg.start()
    assert count(url) == 0 and len(list((tmp_path / "spool").glob("*.jsonl"))) > 0
    with serve_process(env) as (_, port):
        eventually_sync(lambda: count(url) == 40, what="the spool written on the next start")
        info = _info(port).proof_log
        assert (info.written, info.spooled, info.dropped) == (40, 0, 0)
    assert sorted(r["proof_id"] for r in rows(url)) == sorted(p.id for p in work)
    assert list((tmp_path / "spool").glob("*.jsonl")) == []


def _start_error(env: dict[str, str], tmp_path: Path) -> str:
    """`kimina-grpc serve` with `env`: it must exit 2 with one line on stderr, which is returned."""
    full = {
        **os.environ,
        "LEAN_SERVER_HOST": "127.0.0.1",
        "LEAN_SERVER_PORT": "0",
        "LEAN_SERVER_REPL_COMMAND": fake_repl_command(),
        "LEAN_SERVER_SANDBOX": "off",
        "LEAN_SERVER_AUTH": "off",
        "LEAN_SERVER_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        "LEAN_SERVER_DATABASE_TIMEOUT": "2",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-m", "kimina_grpc.cli", "serve"],
        check=False,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_unusable_database_at_start_is_one_line_naming_the_variable(
    pg: PostgresServer, tmp_path: Path, password_file: Path
) -> None:
    url = pg.create_database("start_errors")
    for value, expected in (
        ("mysql://u:s3cret-x@h/db", "neither postgresql://"),
        ("postgresql://u:s3cret-x@h:port/db", "not a valid postgresql:// URL"),
        (pg.url("start_errors", password="s3cret-x"), "password authentication failed"),
        (f"postgresql://kimina:s3cret-x@127.0.0.1:{free_port()}/db", "Connection refused"),
        (f"sqlite:///{tmp_path}/no/such/dir/log.db", "unable to open database file"),
    ):
        line = _start_error({"LEAN_SERVER_DATABASE_URL": value, "LEAN_SERVER_DATABASE_MIGRATE": "true"}, tmp_path)
        assert "LEAN_SERVER_DATABASE_URL" in line and expected in line, line
        assert "s3cret-x" not in line
    # The schema is not there and the server was not asked to create it: it says how.
    line = _start_error(
        {"LEAN_SERVER_DATABASE_URL": url, "LEAN_SERVER_DATABASE_PASSWORD_FILE": str(password_file)}, tmp_path
    )
    assert "LEAN_SERVER_DATABASE_URL" in line and "kimina-grpc db upgrade" in line, line
    line = _start_error(
        {"LEAN_SERVER_DATABASE_URL": url, "LEAN_SERVER_DATABASE_PASSWORD_FILE": str(tmp_path / "missing")}, tmp_path
    )
    assert "LEAN_SERVER_DATABASE_PASSWORD_FILE" in line, line
