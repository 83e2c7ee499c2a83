"""The local spool: batches the database could not take, kept on disk until it can.

One file per batch (JSON lines, written to a temporary name and renamed: a file is whole or absent),
named by the time of its oldest row so the oldest goes first. A file is deleted only after its rows
are committed; a server killed in between writes it again on its next start, and the rows' keys make
the second write a no-op. Bounded in bytes: a batch that does not fit is dropped (the caller counts
it). Blocking file I/O: the writer calls it from a worker thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

SUFFIX = ".jsonl"


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.bytes = 0
        self.rows = 0
        self._files: dict[Path, tuple[int, int]] = {}  # path -> (bytes, rows)

    def open(self) -> None:
        """Create the directory; count what an earlier run left (written on the next replay)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for tmp in self.directory.glob("*.tmp"):  # a write cut short: its rows were never promised
            tmp.unlink(missing_ok=True)
        for path in self.directory.glob(f"*{SUFFIX}"):
            with contextlib.suppress(OSError):
                data = path.read_bytes()
                self._add(path, len(data), data.count(b"\n"))

    def _add(self, path: Path, size: int, rows: int) -> None:
        self._files[path] = (size, rows)
        self.bytes += size
        self.rows += rows

    def put(self, rows: list[dict[str, Any]], oldest: float) -> bool:
        """Keep `rows`; False when they would pass `max_bytes` (nothing is written)."""
        data = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows).encode()
        if self.bytes + len(data) > self.max_bytes:
            return False
        name = f"{oldest:020.6f}-{uuid.uuid4().hex[:12]}"
        tmp = self.directory / f"{name}.tmp"
        path = self.directory / f"{name}{SUFFIX}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(path)
        self._add(path, len(data), len(rows))
        return True

    def oldest(self) -> Path | None:
        return min(self._files, default=None)

    def oldest_time(self) -> float | None:
        path = self.oldest()
        if path is None:
            return None
        try:
            return float(path.name.split("-", 1)[0])
        except ValueError:
            return time.time()

    def read(self, path: Path) -> list[dict[str, Any]]:
        """The rows of one file; a line that does not parse (a disk that lied) is skipped."""
        rows = []
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if isinstance(row, dict) and "key" in row:
                    rows.append(row)
        return rows

    def remove(self, path: Path) -> None:
        """The file's rows are in the database (or never will be)."""
        size, rows = self._files.pop(path, (0, 0))
        self.bytes -= size
        self.rows -= rows
        path.unlink(missing_ok=True)  # another replica sharing the directory may have taken it
