"""The proof log's cost: `python -m bench overhead`'s zero-cost proofs through `kimina-grpc serve` with
the stand-in REPL, with the log off, on SQLite and on a throwaway PostgreSQL (initdb + pg_ctl, as the
tests run it). The server's CPU per proof includes the log's writer (same process); rows are counted
in the database at the end, so a log that fell behind shows."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from bench.overhead import cpu, server, stream_run, verify_run, warm
from kimina_grpc.testing.postgres import PASSWORD, postgres_server
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

PROOFS = 6_000
REPEATS = 3
if TYPE_CHECKING:
    Run: TypeAlias = Callable[[pb_grpc.VerifierServiceAsyncStub], Awaitable[None]]
CASES: list[tuple[str, Run]] = [
    ("StreamVerify, 1 stream", lambda s: stream_run(s, PROOFS, 1, 512)),
    ("Verify, batches of 500", lambda s: verify_run(s, PROOFS, 500)),
]


def measure(log: str, case: str, run: Run, env: dict[str, str]) -> dict[str, Any]:
    with server(LEAN_SERVER_MAX_REPLS="1", LEAN_SERVER_STREAM_WINDOW="512", **env) as (proc, port):

        async def go() -> tuple[float, float, int]:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = pb_grpc.VerifierServiceStub(ch)
                await warm(stub, 1)
                before = cpu(proc)[0]
                start = time.perf_counter()
                await run(stub)
                wall = time.perf_counter() - start
                own = cpu(proc)[0] - before
                written = 0
                if env:  # every row written: the log kept up, or say how far behind it is
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        info = await stub.GetServerInfo(pb.GetServerInfoRequest())
                        written = info.proof_log.written
                        if written >= PROOFS + 4 and not info.proof_log.pending:
                            break
                        await asyncio.sleep(0.05)
                return wall, own, written

        wall, own, written = asyncio.run(go())
    return {
        "log": log,
        "case": case,
        "proofs": PROOFS,
        "proofs_per_s": round(PROOFS / wall),
        "server_cpu_us_per_proof": round(1e6 * own / PROOFS, 1),
        "rows_written": written,
    }


def main() -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="kimina-bench-log-") as tmp, postgres_server() as pg:
        password = Path(tmp, "pw")
        password.write_text(PASSWORD)
        logs: dict[str, Callable[[str], dict[str, str]]] = {
            "off": lambda _: {},
            "sqlite": lambda name: {"LEAN_SERVER_DATABASE_URL": f"sqlite:///{tmp}/{name}.db"},
            "postgresql": lambda name: {
                "LEAN_SERVER_DATABASE_URL": pg.create_database(name),
                "LEAN_SERVER_DATABASE_PASSWORD_FILE": str(password),
            },
        }
        # Each case twice, the three logs in turn each time (a shared machine drifts): the median is kept.
        for i, (case, run) in enumerate(CASES):
            runs: dict[str, list[dict[str, Any]]] = {log: [] for log in logs}
            for rep in range(REPEATS):
                for log, env in logs.items():
                    extra = env(f"b{i}r{rep}")
                    if extra:
                        extra |= {
                            "LEAN_SERVER_DATABASE_MIGRATE": "true",
                            "LEAN_SERVER_LOG_SPOOL_DIR": f"{tmp}/spool-{log}{i}{rep}",
                        }
                    runs[log].append(measure(log, case, run, extra))
            for measured in runs.values():
                measured.sort(key=lambda r: r["server_cpu_us_per_proof"])
                rows.append(measured[len(measured) // 2])
    print(f"prooflog: {PROOFS} zero-cost proofs, stand-in REPL, one REPL, {os.cpu_count()} cores, median of {REPEATS}")
    print(f"  {'case':<26}{'log':<12}{'proofs/s':>10}{'server CPU us/proof':>21}{'rows':>8}")
    for r in rows:
        rows_text = "-" if r["log"] == "off" else str(r["rows_written"])
        print(f"  {r['case']:<26}{r['log']:<12}{r['proofs_per_s']:>10}{r['server_cpu_us_per_proof']:>21}{rows_text:>8}")
    return {"rows": rows}
