"""The Python client's sessions (async and blocking) and the best-first search example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kimina_grpc.client import AsyncKiminaClient, KiminaClient
from kimina_grpc.testing import serve_process

from .helpers.server import running
from .helpers.sessions import CODE, EXACT_P, EXACT_Q, SPLIT, STATEMENT

ROOT = Path(__file__).resolve().parent.parent


async def test_async_session_runs_branches_pipelines_and_finishes() -> None:
    async with running() as (app, _), AsyncKiminaClient(f"127.0.0.1:{app.port}") as client:
        async with client.session(CODE, trust="audit", statement=STATEMENT, timeout=10) as s:
            (root,) = s.roots
            split = await s.run(root.state, SPLIT)
            attempts = await s.run_many([(split.state, EXACT_Q), (split.state, EXACT_P)])
            assert [a.status for a in attempts] == ["error", "incomplete"]
            done = await s.run(attempts[1].state, EXACT_Q)
            assert done.complete
            finished = await s.finish(done.state)
            assert finished.result.ok and "exact hq" in finished.proof


def test_blocking_session_and_the_search_example() -> None:
    with serve_process() as (_, port):
        with KiminaClient(f"127.0.0.1:{port}") as client, client.session(CODE) as s:
            (root,) = s.roots
            step = s.run(root.state, SPLIT)
            assert step.status == "incomplete" and len(step.goals) == 2
        example = subprocess.run(
            [sys.executable, str(ROOT / "clients" / "best_first_search.py"), "--target", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert example.returncode == 0, example.stderr
        assert "constructor" in example.stdout and "exact hr" in example.stdout
