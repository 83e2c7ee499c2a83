"""What the stand-in REPLs ran, to tell a cached answer from a check (the `fake_log` fixture turns
the log on; test files that use it import it by name)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def checks(log: Path) -> list[str]:
    """The proof bodies the stand-in REPLs ran (commands on an env; headers have none)."""
    if not log.exists():
        return []
    requests = [json.loads(line)["request"] for line in log.read_text().splitlines()]
    return [r["cmd"] for r in requests if "cmd" in r and r.get("env") is not None]


@pytest.fixture
def fake_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "checks.jsonl"
    monkeypatch.setenv("KIMINA_FAKE_LOG", str(path))  # the REPLs inherit the server's environment
    return path
