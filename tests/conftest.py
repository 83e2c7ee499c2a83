from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from kimina_grpc import log

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


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"the shared fixtures are missing at {FIXTURES} (set KIMINA_FIXTURES)")
    return FIXTURES


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    """Server logs go to stderr (as in `kimina-grpc serve`), at WARNING, so stdout stays the tools' own."""
    log.configure("WARNING", "dev")
