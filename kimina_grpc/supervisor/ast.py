"""ExportAst behind a bound: at most `max_jobs` exports at once (held for the whole export), one at a
time per module (the tool writes one output file per module), raw code in private temporary modules."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kimina_grpc.repl.exporter import export_module

# Dotted Lean identifiers: letters (any script), digits, _, ', !, ? and subscripts; «guillemets» too.
_PART = r"(?:[^\W\d][\w'!?\u2080-\u209c]*|«[^»\n]+»)"
MODULE_NAME = re.compile(rf"{_PART}(?:\.{_PART})*")
TMP_ROOT = "KiminaTmp"


@dataclass(frozen=True, slots=True)
class AstItem:
    module: str
    ast: str
    error: str
    seconds: float


class AstExporter:
    def __init__(self, argv: tuple[str, ...], project: Path, *, max_jobs: int, max_bytes: int) -> None:
        self.argv = argv
        self.project = project
        self.max_bytes = max_bytes
        self._slots = asyncio.Semaphore(max_jobs)
        self._locks: dict[str, asyncio.Lock] = {}

    async def _one(self, module: str, name: str, *, one: bool, timeout: float) -> AstItem:
        start = time.monotonic()
        lock = self._locks.setdefault(module, asyncio.Lock())
        async with self._slots, lock:
            run = await export_module(self.argv, self.project, module, one=one, timeout=timeout)
        ast, error = run.ast or "", run.error
        if len(ast) > self.max_bytes // 4 and len(ast.encode()) > self.max_bytes:
            ast, error = (
                "",
                f"the AST of {name} has {len(ast)} bytes, over the message limit (LEAN_SERVER_MAX_MESSAGE_BYTES)",
            )
        return AstItem(name, ast, error, time.monotonic() - start)

    async def modules(self, names: list[str], *, one: bool, timeout: float) -> list[AstItem]:
        return list(await asyncio.gather(*(self._one(m, m, one=one, timeout=timeout) for m in names)))

    async def code(self, code: str, name: str, *, timeout: float) -> AstItem:
        """Export raw code as a temporary module in a private directory of the project; the result
        carries `name`, never the temporary module's."""
        token = f"U{uuid.uuid4().hex}"
        folder = self.project / TMP_ROOT / token
        folder.mkdir(parents=True, mode=0o700)
        (folder / "Code.lean").write_text(code, encoding="utf-8")
        try:
            item = await self._one(f"{TMP_ROOT}.{token}.Code", name, one=True, timeout=timeout)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.project / TMP_ROOT).rmdir()  # only when no other export uses it
            out_dir = self.project / ".lake" / "build" / "lib" / TMP_ROOT / token
            shutil.rmtree(out_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.project / ".lake" / "build" / "lib" / TMP_ROOT).rmdir()
        return item
