"""Trust levels with the stand-in REPL: a one-REPL pool that logs what each REPL was sent (the `sup`
fixture, with the judge's temporary directories in `tmp`), the requests per REPL, and a check at a
level. Test files that use the fixtures import them by name."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kimina_grpc.repl import ReplSpec, split_header
from kimina_grpc.supervisor import CheckOptions, PoolSettings, Supervisor
from kimina_grpc.supervisor.jobs import Outcome, TrustLevel, TrustPolicy

from .pool import ARGV
from .processes import children

CHECK, AUDIT, JUDGE = TrustLevel.CHECK, TrustLevel.AUDIT, TrustLevel.JUDGE
HEADER = "import Mathlib\n\n"
LEAN = "v4.22.0"  # the stand-in's Lean: the sorry exploit needs `warn.sorry` (Lean 4.22 on)


@pytest.fixture
def tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The judge's private temporary directories are made here, so a test sees every one."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    yield scratch


@pytest.fixture
async def sup(tmp_path: Path, tmp: Path) -> AsyncIterator[Supervisor]:
    log = tmp_path / "requests.jsonl"
    env = {"KIMINA_FAKE_LOG": str(log), "KIMINA_FAKE_IMPORT_SECONDS": "0.05", "KIMINA_FAKE_LEAN_VERSION": LEAN}
    s = Supervisor(PoolSettings(spec=ReplSpec(argv=ARGV, env=env), max_repls=1, import_cost_hint=0.1))
    await s.start()
    yield s
    await s.close()
    assert children() == []
    assert list(tmp.iterdir()) == [], "the judge left temporary files"


def sent(tmp_path: Path) -> list[list[dict[str, Any]]]:
    """Requests per REPL process, in order (the pool's REPL first, then each judge), with the
    reference name's random suffix and the pickle's temporary directory made fixed."""
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for line in (tmp_path / "requests.jsonl").read_text().splitlines():
        row = json.loads(line)
        text = re.sub(r"_kimina[0-9a-f]{12}", "_kiminaN", json.dumps(row["request"]))
        text = re.sub(r'"[^"]*/kimina-judge-[^"/]*/proof\.olean"', '"TMP/proof.olean"', text)
        by_pid.setdefault(row["pid"], []).append(json.loads(text))
    return [requests for requests in by_pid.values() if requests != [{"cmd": ""}]]  # not the start-up probe


async def check(sup: Supervisor, body: str, level: TrustLevel, **policy: Any) -> Outcome:
    trust = None
    if level is not CHECK:
        policy.setdefault("theorem", "t")
        trust = TrustPolicy(level, **policy)
    job = sup.submit(split_header(HEADER + body), CheckOptions(timeout=10.0, trust=trust))
    return await job.future


HONEST = "theorem t : 1 + 1 = 2 := by norm_num"
