"""The proof log end to end, against SQLite and a real PostgreSQL (initdb + pg_ctl on a free port):
every answered proof is one row with its verdict, tags and environment, the code stored once."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import datasets
import grpc
import pytest

from kimina_grpc import cli
from kimina_grpc.client import AsyncKiminaClient, Proof
from kimina_grpc.prooflog import load
from kimina_grpc.testing.postgres import PASSWORD, PostgresServer, postgres_server
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually
from .helpers.prooflog import chunks, code, count, rows, stream, verdict
from .helpers.server import running

DISTINCT = 100


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_url(pg: PostgresServer, request: pytest.FixtureRequest) -> str:
    return pg.create_database(
        f"t_{request.node.name[:40].lower()}".replace("[", "_").replace("]", "").replace("-", "_")
    )


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "db-password"
    path.write_text(PASSWORD + "\n")
    return path


def _log_settings(url: str, tmp_path: Path, password_file: Path, **kw: Any) -> dict[str, Any]:
    return {
        "database_url": url,
        "database_password_file": password_file if url.startswith("postgresql") else None,
        "database_migrate": True,
        "log_spool_dir": tmp_path / "spool",
        "log_flush_seconds": 0.05,
        **kw,
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_thousand_proofs_over_streams_and_batches_are_thousand_rows(
    backend: str, tmp_path: Path, password_file: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else f"sqlite:///{tmp_path}/log.db"
    expected: dict[str, tuple[int, dict[str, str]]] = {}  # id -> (distinct proof number, tags)
    streamed = [[], []]  # type: list[list[pb.Proof]]
    batched: list[pb.Proof] = []
    for i in range(1000):
        n = i % DISTINCT
        own = {"problem": f"p{n}", "sample": str(i)}
        if i % 2:
            pid = f"s{i}"
            streamed[i % 4 // 2].append(pb.Proof(id=pid, code=code(n), tags={**own, "model": "m-stream"}))
            expected[pid] = (n, {**own, "model": "m-stream"})
        else:
            pid = f"v{i}"
            batched.append(pb.Proof(id=pid, code=code(n), tags=own))
            expected[pid] = (n, {**own, "model": "m-batch", "step": "7"})
    async with running(**_log_settings(url, tmp_path, password_file)) as (app, ch):
        stub = pb_grpc.VerifierServiceStub(ch)

        async def batches() -> None:
            for part in chunks(batched, 100):
                # the request's tags go under each proof's own
                req = pb.VerifyRequest(proofs=part, tags={"model": "m-batch", "step": "7", "sample": "x"})
                reply = await stub.Verify(req)
                assert [pb.Verdict.Name(r.verdict) for r in reply.results] == [
                    f"VERDICT_{verdict(expected[p.id][0])}" for p in part
                ]

        s0, s1, _ = await asyncio.gather(stream(stub, streamed[0]), stream(stub, streamed[1]), batches())
        for sent, got in ((streamed[0], s0), (streamed[1], s1)):
            assert got == {p.id: getattr(pb, f"VERDICT_{verdict(expected[p.id][0])}") for p in sent}
        assert app.prooflog is not None
        await eventually(lambda: app.prooflog is not None and app.prooflog.state().written == 1000, what="1000 rows")
        info = await stub.GetServerInfo(pb.GetServerInfoRequest())
        environment = app.cache.environment
    assert (info.proof_log.enabled, info.proof_log.backend, info.proof_log.up) == (True, backend, True)
    assert (info.proof_log.written, info.proof_log.dropped, info.proof_log.spooled) == (1000, 0, 0)
    assert any("proof log with the sandbox off" in w for w in info.security_warnings)
    got_rows = rows(url)
    assert sorted(r["proof_id"] for r in got_rows) == sorted(expected)  # each proof once
    for r in got_rows:
        n, tags = expected[r["proof_id"]]
        assert (r["verdict"], r["tags"], r["code"]) == (verdict(n), tags, code(n))
        assert (r["environment"], r["header"], r["trust_level"]) == (environment, "import A", "CHECK")
        assert r["rpc"] == ("StreamVerify" if r["proof_id"].startswith("s") else "Verify")
        assert r["answered_at"] >= r["received_at"]
    assert any(r["from_cache"] or r["shared_check"] for r in got_rows)  # the same proof ran once, logged each time
    assert next(r for r in got_rows if r["verdict"] == "INVALID")["messages"][0]["text"] == "nope"
    assert count(url, "kimina_codes") == DISTINCT  # the code stored once per distinct proof
    assert count(url, "kimina_headers") == 1


async def test_export_parquet_loads_with_datasets_and_matches_the_rows(
    tmp_path: Path, password_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    proofs = [pb.Proof(id=f"x{i}", code=code(i), tags={"problem": f"p{i % 4}"} if i % 5 else {}) for i in range(30)]
    async with running(**_log_settings(url, tmp_path, password_file)) as (app, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        await stub.Verify(pb.VerifyRequest(proofs=proofs, tags={"model": "m"}))
        await eventually(lambda: app.prooflog is not None and app.prooflog.state().written == 30)
    want = {r["proof_id"]: r for r in rows(url)}
    out = tmp_path / "log.parquet"
    assert cli.main(["log", "export", str(out), "--url", url, "--format", "parquet"]) == 0
    ds = datasets.Dataset.from_parquet(str(out))
    assert len(ds) == 30
    for got in ds:
        row = want[got["proof_id"]]
        assert {k: v for k, v in got["tags"].items() if v is not None} == row["tags"]
        assert (got["verdict"], got["code"], got["environment"]) == (row["verdict"], row["code"], row["environment"])
        assert got["messages"] == row["messages"] and got["answered_at"] == row["answered_at"]
    # Filters: the VALID proofs of problem p1 only, as JSON lines and through load().
    lines = tmp_path / "valid.jsonl"
    argv = ["log", "export", str(lines), "--url", url, "--format", "jsonl", "--verdict", "valid", "--tag", "problem=p1"]
    assert cli.main(argv) == 0
    picked = [json.loads(line) for line in lines.read_text().splitlines()]
    expected = sorted(i for i, r in want.items() if r["verdict"] == "VALID" and r["tags"].get("problem") == "p1")
    assert picked and sorted(r["proof_id"] for r in picked) == expected
    loaded = load(url, verdict="VALID", tags={"problem": "p1"}, since=datetime(2000, 1, 1, tzinfo=UTC))
    assert sorted(loaded["proof_id"]) == expected
    assert len(load(url, until=datetime(2000, 1, 1, tzinfo=UTC))) == 0
    capsys.readouterr()
    assert cli.main(["log", "stats", "--url", url, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["rows"] == 30 and sum(stats["by_verdict"].values()) == 30
    assert ["model", "m", 30] in stats["by_tag"]
    p1 = [r for r in want.values() if r["tags"].get("problem") == "p1"]
    assert ["p1", sum(r["verdict"] == "VALID" for r in p1), len(p1)] in stats["pass_rate"]


async def test_bad_tags_are_invalid_argument_and_a_bad_stream_item_not_checked() -> None:
    async with running() as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        too_many = {f"k{i}": "v" for i in range(20)}
        bad = [
            pb.VerifyRequest(proofs=[pb.Proof(id="a", code=code(0), tags={"bad key": "v"})]),
            pb.VerifyRequest(proofs=[pb.Proof(id="a", code=code(0), tags={"k": "x" * 257})]),
            pb.VerifyRequest(
                proofs=[pb.Proof(id="a", code=code(0), tags=too_many)], tags={f"r{i}": "v" for i in range(13)}
            ),
        ]
        for req in bad:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Verify(req)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "tags" in (err.value.details() or "")
        ok = await stub.Verify(
            pb.VerifyRequest(proofs=[pb.Proof(id="a", code=code(0), tags=too_many)], tags={"k0": "v"})
        )
        assert ok.results[0].verdict == pb.VERDICT_VALID  # 20 tags, one shared with the request's: within bounds
        got = await stream(stub, [pb.Proof(id="s", code=code(0), tags={"": "v"}), pb.Proof(id="t", code=code(0))])
        assert got == {"s": pb.VERDICT_NOT_CHECKED, "t": pb.VERDICT_VALID}


async def test_a_locked_database_spools_a_full_spool_drops_and_counts_and_verdicts_flow(
    tmp_path: Path, password_file: Path
) -> None:
    """SQLite held by another writer (a slow database): batches time out into the spool; the spool is
    bounded, what does not fit is counted as dropped; every proof is answered all along; once the
    lock goes, every kept row is written."""
    url = f"sqlite:///{tmp_path}/log.db"
    kw = _log_settings(url, tmp_path, password_file, database_timeout=0.2, database_retry_seconds=0.2)
    async with running(**kw, log_spool_max_bytes=6000, log_batch_size=5) as (app, ch):
        assert app.prooflog is not None
        blocker = sqlite3.connect(f"{tmp_path}/log.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        stub = pb_grpc.VerifierServiceStub(ch)
        reply = await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id=f"q{i}", code=code(i)) for i in range(60)]))
        assert [r.verdict for r in reply.results] == [getattr(pb, f"VERDICT_{verdict(i)}") for i in range(60)]
        log = app.prooflog
        await eventually(lambda: log.state().pending == 0 and log.state().dropped > 0, what="spool full")
        state = log.state()
        assert not state.up and state.spooled > 0 and log.spool.bytes <= 6000 and state.written == 0
        info = await stub.GetServerInfo(pb.GetServerInfoRequest())
        assert info.proof_log.dropped == state.dropped and info.proof_log.last_error
        blocker.execute("ROLLBACK")
        blocker.close()
        await eventually(lambda: log.state().spooled == 0 and log.state().up, what="spool written")
        assert log.state().written + log.state().dropped == 60
    assert count(url) == 60 - state.dropped


async def test_retention_deletes_old_rows_and_their_code(tmp_path: Path, password_file: Path) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    async with running(**_log_settings(url, tmp_path, password_file)) as (app, ch):
        await pb_grpc.VerifierServiceStub(ch).Verify(pb.VerifyRequest(proofs=[pb.Proof(id="old", code=code(1))]))
        await eventually(lambda: app.prooflog is not None and app.prooflog.state().written == 1)
    with sqlite3.connect(f"{tmp_path}/log.db") as conn:  # ten days ago
        conn.execute("UPDATE kimina_proofs SET answered_at = answered_at - 864000")
    async with running(**_log_settings(url, tmp_path, password_file), log_retention_days=5) as (app, ch):
        await pb_grpc.VerifierServiceStub(ch).Verify(pb.VerifyRequest(proofs=[pb.Proof(id="new", code=code(2))]))
        await eventually(lambda: count(url) == 1 and count(url, "kimina_codes") == 1, what="old row swept")
    assert [r["proof_id"] for r in rows(url)] == ["new"]


def test_db_upgrade_is_idempotent_and_the_server_asks_for_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    assert cli.main(["db", "upgrade", "--url", url]) == 0
    assert "version 1 (applied 1)" in capsys.readouterr().out
    assert cli.main(["db", "upgrade", "--url", url]) == 0
    assert "version 1 (nothing to do)" in capsys.readouterr().out
    assert cli.main(["log", "stats", "--url", f"sqlite:///{tmp_path}/none.db"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "LEAN_SERVER_DATABASE_URL" in err and "none.db" in err


async def test_nul_characters_reach_postgresql_as_replacement_characters_and_cost_no_row(
    pg_url: str, tmp_path: Path, password_file: Path
) -> None:
    """PostgreSQL's text and jsonb refuse U+0000, which a proof's code, a tag value and Lean's message
    may all hold: the row is written with U+FFFD instead, and its batch with it."""
    nul = "import A\n\ntheorem t : True := by\n  -- fake: error bad\x00byte\n  trivial\n-- \x00\n"
    proofs = [pb.Proof(id=f"n{i}", code=code(i)) for i in range(9)]
    proofs.append(pb.Proof(id="nul", code=nul, tags={"problem": "p\x00"}))
    async with running(**_log_settings(pg_url, tmp_path, password_file)) as (app, ch):
        reply = await pb_grpc.VerifierServiceStub(ch).Verify(pb.VerifyRequest(proofs=proofs))
        assert reply.results[-1].verdict == pb.VERDICT_INVALID and "\x00" in reply.results[-1].messages[0].text
        log = app.prooflog
        assert log is not None
        await eventually(lambda: log.state().written == 10)
        assert log.state().dropped == 0
    row = next(r for r in rows(pg_url) if r["proof_id"] == "nul")
    assert row["code"] == nul.replace("\x00", "\ufffd") and row["tags"] == {"problem": "p\ufffd"}
    assert row["messages"][0]["text"] == "bad\ufffdbyte"


async def test_the_python_clients_proof_tags_reach_the_log(tmp_path: Path, password_file: Path) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    async with running(**_log_settings(url, tmp_path, password_file)) as (app, _):
        async with AsyncKiminaClient(f"127.0.0.1:{app.port}") as client:
            await client.verify([Proof("a", code(0), tags={"problem": "p0", "model": "m"})])
            async for _ in client.verify_stream([Proof("b", code(1), tags={"problem": "p1"}), Proof("c", code(2))]):
                pass
        await eventually(lambda: app.prooflog is not None and app.prooflog.state().written == 3)
    assert {r["proof_id"]: r["tags"] for r in rows(url)} == {
        "a": {"problem": "p0", "model": "m"},
        "b": {"problem": "p1"},
        "c": {},
    }
