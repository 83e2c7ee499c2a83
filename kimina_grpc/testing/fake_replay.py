"""The stand-in REPL's replay mode (`--replay DIR`, `--table FILE`): answers from recorded
transcripts, byte for byte, instead of modelling Lean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kimina_grpc.testing.fake_wire import chunks, normalise_request


class Replayer:
    """Answers from recorded transcripts (sessions) or a table (single requests)."""

    def __init__(self, directory: Path | None, table: Path | None) -> None:
        self.sessions: list[tuple[list[Any], list[str]]] = []
        for path in sorted(directory.glob("*.in")) if directory else []:
            out = path.with_name(path.name[: -len(".in")] + ".expected.out")
            if not out.exists():
                continue
            try:
                requests = [normalise_request(b) for b in chunks(path.read_text())]
            except ValueError:
                continue
            self.sessions.append((requests, list(chunks(out.read_text()))))
        self.table: list[tuple[Any, str]] = []
        if table:
            for line in table.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.table.append((row["request"], json.dumps(row["reply"], indent=1, ensure_ascii=False) + "\n"))
        self.history: list[Any] = []

    def answer(self, req: Any) -> str | None:
        self.history.append(req)
        k = len(self.history) - 1
        for requests, replies in self.sessions:
            if requests[: k + 1] == self.history and k < len(replies):
                return replies[k]
        for request, reply in self.table:
            if request == req:
                return reply
        return None
