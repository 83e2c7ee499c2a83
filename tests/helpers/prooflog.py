"""Shared by the proof-log tests: the work (proofs with known verdicts and tags) and the rows."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from typing import Any

from kimina_grpc.database_url import parse
from kimina_grpc.prooflog.read import Filter, Reader
from kimina_grpc.testing.postgres import PASSWORD
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

DIRECTIVES = (("", "VALID"), ("  -- fake: error nope", "INVALID"), ("  -- fake: sorry", "SORRY"))


def code(n: int) -> str:
    """Distinct proof number `n` (its verdict: DIRECTIVES[n % 3])."""
    return f"import A\n\ntheorem t{n} : True := by\n{DIRECTIVES[n % 3][0]}\n  trivial\n"


def verdict(n: int) -> str:
    return DIRECTIVES[n % 3][1]


def rows(url: str) -> list[dict[str, Any]]:
    """Every row of the log at `url` (the tests' password for PostgreSQL)."""
    with Reader(parse(url, PASSWORD)) as r:
        return list(r.rows(Filter()))


def count(url: str, table: str = "kimina_proofs") -> int:
    target = parse(url, PASSWORD)
    if target.backend == "sqlite":
        with sqlite3.connect(target.dsn) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    import psycopg

    with psycopg.connect(target.dsn, password=PASSWORD) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


async def stream(stub: pb_grpc.VerifierServiceAsyncStub, proofs: list[pb.Proof]) -> dict[str, int]:
    """Send `proofs` on one stream; id -> verdict, each id answered once."""

    async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
        for p in proofs:
            yield pb.StreamVerifyRequest(proof=p)

    got: dict[str, int] = {}
    async for r in stub.StreamVerify(requests()):
        assert r.result.id not in got
        got[r.result.id] = r.result.verdict
    return got


def chunks(items: list[pb.Proof], size: int) -> Iterator[list[pb.Proof]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
