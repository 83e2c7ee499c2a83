from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc._cython import cygrpc  # type: ignore[attr-defined]

from kimina_grpc import log
from kimina_grpc.supervisor import Supervisor

from .helpers.paths import FIXTURES
from .helpers.pool import Started, pool
from .helpers.processes import none_left

# grpc.aio shuts its engine down (joining its poller thread) when the last channel or server of the
# process is garbage-collected. A test that fails before closing its server leaves calls pending on
# the engine's completion queue: collected later, inside another test's event loop, that join never
# returns and the whole run hangs. One reference held for the session keeps the engine up, so a
# failing test fails alone.
cygrpc.init_grpc_aio()

# Fixtures more than one test file uses, with the helpers they go with.
pytest_plugins = ["tests.helpers.cache", "tests.helpers.install", "tests.helpers.tls", "tests.helpers.trust"]


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"the shared fixtures are missing at {FIXTURES} (set KIMINA_FIXTURES)")
    return FIXTURES


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    """Server logs go to stderr (as in `kimina-grpc serve`), at WARNING, so stdout stays the tools' own."""
    log.configure("WARNING", "dev")


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
