from __future__ import annotations

import os
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeAlias

import psutil
import pytest
from grpc._cython import cygrpc  # type: ignore[attr-defined]

from kimina_grpc import log
from kimina_grpc.repl import ReplSpec, split_header
from kimina_grpc.supervisor import CheckOptions, PoolSettings, Supervisor
from kimina_grpc.supervisor.jobs import Outcome
from kimina_grpc.testing import fake_repl_command

# grpc.aio shuts its engine down (joining its poller thread) when the last channel or server of the
# process is garbage-collected. A test that fails before closing its server leaves calls pending on
# the engine's completion queue: collected later, inside another test's event loop, that join never
# returns and the whole run hangs. One reference held for the session keeps the engine up, so a
# failing test fails alone.
cygrpc.init_grpc_aio()

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("KIMINA_FIXTURES", ROOT.parent / "shared" / "fixtures"))
TRANSCRIPTS = FIXTURES / "repl-transcripts"
KIMINA_MATCH = FIXTURES / "kimina-match"


def children() -> list[psutil.Process]:
    """Live (non-zombie) descendants of this test process."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def described(processes: list[psutil.Process]) -> list[str]:
    """The processes' pids and command lines, for a failure message."""
    out = []
    for p in processes:
        try:
            out.append(f"{p.pid}: {' '.join(p.cmdline())[:300]}")
        except psutil.Error:
            out.append(f"{p.pid}: (gone)")
    return out


async def none_left(timeout: float = 10.0) -> None:
    """After a pool or server was closed: no process of ours is left. One the server killed may
    still be on its way out (a loaded machine): wait briefly, and name any that stays."""
    from tests.helpers import eventually

    try:
        await eventually(lambda: not children(), timeout=timeout)
    except AssertionError:
        raise AssertionError(f"processes left after close: {described(children())}") from None


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"the shared fixtures are missing at {FIXTURES} (set KIMINA_FIXTURES)")
    return FIXTURES


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    """Server logs go to stderr (as in `kimina-grpc serve`), at WARNING, so stdout stays the tools' own."""
    log.configure("WARNING", "dev")


# The supervisor with stand-in REPLs, shared by the supervisor, fidelity and fault tests.
ARGV = tuple(shlex.split(fake_repl_command()))


def pool(**kw: object) -> Supervisor:
    spec = kw.pop("spec", ReplSpec(argv=ARGV))
    return Supervisor(PoolSettings(spec=spec, import_cost_hint=0.1, **kw))  # type: ignore[arg-type]


async def check(sup: Supervisor, code: str, timeout: float = 10.0, **opts: object) -> Outcome:
    job = sup.submit(split_header(code), CheckOptions(timeout=timeout, **opts))  # type: ignore[arg-type]
    return await job.future


Started: TypeAlias = Callable[..., Awaitable[Supervisor]]


@pytest.fixture
async def started() -> AsyncIterator[Started]:
    """Makes started pools (see `pool`); closes them after the test and checks no REPL is left."""
    made: list[Supervisor] = []

    async def start(**kw: object) -> Supervisor:
        sup = pool(**kw)
        made.append(sup)
        await sup.start()
        return sup

    yield start
    for sup in made:
        await sup.close()
    await none_left()
