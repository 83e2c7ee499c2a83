"""A session REPL's replies are checked to be the REPL's own, as a pool REPL's are (repl/ownership.py):
a session REPL is shared by several sessions (several users), so a process one session's code leaves
running must not stay on it, where it could write replies into the others' exchanges."""

from __future__ import annotations

import uuid

import grpc
import psutil
import pytest

from kimina_grpc.v1 import verifier_pb2 as pb

from .helpers import eventually
from .helpers.server import running
from .helpers.sessions import CODE, SPLIT, Raw


def marked(marker: str) -> list[psutil.Process]:
    """Running processes with `marker` in their command line."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if marker in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


async def test_a_process_the_code_leaves_running_is_not_trusted_with_the_shared_repl() -> None:
    marker = f"kimina-session-{uuid.uuid4().hex}"
    async with running(session_repls=1) as (_, ch):
        b = Raw(ch)
        (rb,) = (await b.open()).states
        a = Raw(ch)  # on the same REPL as b
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await a.open(code=f"{CODE}\n-- fake: spawn 120 {marker}")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "started a process" in (err.value.details() or "")
        await eventually(lambda: marked(marker) == [], what="what the code started killed with its REPL")
        step = await b.run(rb.state, SPLIT)  # b moved to a fresh REPL with its states
        assert step.status == pb.TACTIC_STATUS_INCOMPLETE and len(step.goals) == 2
        await b.close()
