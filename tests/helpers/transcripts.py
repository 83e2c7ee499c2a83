"""The REPL's recorded transcripts (the shared fixtures), read as requests and replies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kimina_grpc.testing.fake_repl import chunks, normalise_request

from .paths import TRANSCRIPTS


def tactic_transcripts() -> list[Path]:
    return sorted(p for p in TRANSCRIPTS.glob("*.in") if '"tactic"' in p.read_text())


def recorded(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    out = path.with_name(path.name[:-3] + ".expected.out")
    requests = [normalise_request(b) for b in chunks(path.read_text())]
    replies = [json.loads(b) for b in chunks(out.read_text())] if out.exists() else []
    return requests, replies
