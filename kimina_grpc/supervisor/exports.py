"""ExportAst behind a bound: at most `max_jobs` exports at once (held for the whole export), one at a
time per module (the tool writes one output file per module), raw code in private temporary modules.
What a call creates is removed when it ends: its output file, the directories made for it (once no
other export writes below them) and its per-name lock.

In the box, the project is read-only but for the one file the tool writes: for named modules (the
project's own, trusted code) its output file, bound writable; for raw code (untrusted) nothing of the
project at all: the code exists only inside the box (a private tmpfs over `KiminaTmp/`, the file
created from a memfd) and the tool writes its output into another private tmpfs, over
`.lake/build/lib/KiminaTmp`, both of the box's /tmp size. Either way the output reaches the server
through a pipe (repl/exporter.py), never through a path the box could have changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from kimina_grpc.repl.exporter import ExportRun, Mounts, export_module, output_path
from kimina_grpc.repl.sandbox import NO_LIMITS, OFF, Box, Limits

# Dotted Lean identifiers: letters (any script), digits, _, ', !, ? and subscripts. No «guillemets»:
# the module name becomes a path, and «../x» would leave the project.
_PART = r"[^\W\d][\w'!?\u2080-\u209c]*"
MODULE_NAME = re.compile(rf"{_PART}(?:\.{_PART})*")
TMP_ROOT = "KiminaTmp"


@dataclass(frozen=True, slots=True)
class AstItem:
    module: str
    ast: str
    error: str
    seconds: float


class AstExporter:
    def __init__(
        self,
        argv: tuple[str, ...],
        project: Path,
        *,
        max_jobs: int,
        max_bytes: int,
        box: Box = OFF,
        limits: Limits = NO_LIMITS,
    ) -> None:
        self.argv = argv
        self.project = project
        self.max_bytes = max_bytes
        self.box = box
        self.limits = limits
        self._slots = asyncio.Semaphore(max_jobs)
        # Per module name, only while an export of it runs or waits: names come from callers.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        # Output directories exports created (not the project's own), and how many running exports
        # write below each: the last one out removes what is empty.
        self._made: set[Path] = set()
        self._using: dict[Path, int] = {}

    @property
    def busy_names(self) -> int:
        """Module names with an export running or waiting (the per-name state held)."""
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def _exclusive(self, module: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(module, (asyncio.Lock(), 0))
        self._locks[module] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[module]
            if users == 1:
                del self._locks[module]
            else:
                self._locks[module] = (lock, users - 1)

    def _claim(self, out: Path) -> list[Path]:
        """The output file's directories below the project's lib, deepest first: those missing are
        made here (and remembered as ours) and each is marked in use until `_release`."""
        lib = self._lib
        dirs = [d for d in out.parents if d != lib and lib in d.parents]
        claimed: list[Path] = []
        try:
            lib.mkdir(parents=True, exist_ok=True)  # the project's build directory: it stays
            for d in reversed(dirs):
                if not d.is_dir():
                    d.mkdir(mode=0o755)
                    self._made.add(d)
                self._using[d] = self._using.get(d, 0) + 1
                claimed.insert(0, d)
        except OSError:
            self._release(claimed)
            raise
        return dirs

    def _release(self, dirs: list[Path]) -> None:
        """Unmark `dirs`; remove, deepest first, those exports made that are now empty and unused."""
        for d in dirs:
            left = self._using.get(d, 1) - 1
            if left:
                self._using[d] = left
            else:
                self._using.pop(d, None)
        for d in dirs:
            if d not in self._made or d in self._using:
                break
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                self._made.discard(d)  # not empty: something else lives there now, it is not ours
                break
            self._made.discard(d)

    @property
    def _lib(self) -> Path:
        return self.project / ".lake" / "build" / "lib"

    async def _run(self, module: str, *, one: bool, timeout: float, mounts: Mounts) -> ExportRun:
        return await export_module(
            self.argv,
            str(self.project),
            module,
            one=one,
            timeout=timeout,
            max_bytes=self.max_bytes,
            box=self.box,
            limits=self.limits,
            mounts=mounts,
        )

    async def _one(self, module: str, name: str, *, one: bool, timeout: float, mounts: Mounts | None = None) -> AstItem:
        """Export `module`, reported as `name`. Without `mounts` (a named module), its output file on
        the host is removed before and after, and in the box it is the only file bound writable."""
        start = time.monotonic()
        out, named = self.project / output_path(module), mounts is None
        async with self._slots, self._exclusive(module):
            dirs: list[Path] = []
            try:
                if named:
                    out.unlink(missing_ok=True)
                    dirs = self._claim(out)
                    if self.box.enabled:
                        out.touch()  # the bind's source
                        if (uid := self.box.runs_as) is not None:
                            os.chown(out, uid, uid)  # the box's own uid writes it
                        mounts = Mounts(binds=[(str(out), str(out))])
                run = await self._run(module, one=one, timeout=timeout, mounts=mounts or Mounts())
            except OSError as exc:
                run = ExportRun(None, f"cannot prepare the exporter's output file: {exc}")
            finally:
                if named:
                    with contextlib.suppress(OSError):
                        out.unlink(missing_ok=True)
                    self._release(dirs)
        return AstItem(name, run.ast or "", run.error, time.monotonic() - start)

    async def modules(self, names: list[str], *, one: bool, timeout: float) -> list[AstItem]:
        return list(await asyncio.gather(*(self._one(m, m, one=one, timeout=timeout) for m in names)))

    async def code(self, code: str, name: str, *, timeout: float) -> AstItem:
        """Export raw code as a temporary module; the result carries `name`, never the temporary
        module's."""
        token = f"U{uuid.uuid4().hex}"
        module = f"{TMP_ROOT}.{token}.Code"
        if self.box.enabled:
            return await self._boxed_code(code, name, token, module, timeout)
        folder = self.project / TMP_ROOT / token
        folder.mkdir(parents=True, mode=0o700)
        (folder / "Code.lean").write_text(code, encoding="utf-8")
        try:
            item = await self._one(module, name, one=True, timeout=timeout)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.project / TMP_ROOT).rmdir()  # only when no other export uses it
            out_dir = self._lib / TMP_ROOT / token
            shutil.rmtree(out_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self._lib / TMP_ROOT).rmdir()
        return item

    async def _boxed_code(self, code: str, name: str, token: str, module: str, timeout: float) -> AstItem:
        src_mount, out_mount = self.project / TMP_ROOT, self._lib / TMP_ROOT
        try:
            # Empty mount points; on a read-only image they are made at build time (see Dockerfile).
            src_mount.mkdir(parents=True, exist_ok=True)
            out_mount.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return AstItem(name, "", f"cannot prepare the exporter's mount points: {exc}", 0.0)
        fd = os.memfd_create("code")
        try:
            _write_all(fd, code.encode())
            os.lseek(fd, 0, os.SEEK_SET)
            mounts = Mounts(
                tmpfs=[str(src_mount), str(out_mount)],
                files=[(fd, str(src_mount / token / "Code.lean"))],
            )
            return await self._one(module, name, one=True, timeout=timeout, mounts=mounts)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
