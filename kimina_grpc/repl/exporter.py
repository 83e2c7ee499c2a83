"""One run of the ast_export tool (`lake exe ast-export [--one] Module`): in its own process group, with
a timeout that kills the group, output drained, and its JSON read from where it writes it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ExportRun:
    ast: str | None
    """The exported JSON text, when the tool wrote one and reported no Lean error."""
    error: str
    """Why there is no AST (tool failure, Lean's error messages, timeout); empty on success."""


def output_path(project: Path, module: str) -> Path:
    """Where ast_export writes a module's tree: .lake/build/lib/<A/B/C>.out.json."""
    return project / ".lake" / "build" / "lib" / (module.replace(".", "/") + ".out.json")


async def export_module(argv: tuple[str, ...], project: Path, module: str, *, one: bool, timeout: float) -> ExportRun:
    """Run the exporter for `module`; the output file is read and removed."""
    out = output_path(project, module)
    out.parent.mkdir(parents=True, exist_ok=True)  # nested modules: the tool does not create it
    out.unlink(missing_ok=True)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            *(["--one"] if one else []),
            module,
            cwd=project,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a timeout kills its group, never the server
        )
    except OSError as exc:
        return ExportRun(None, f"cannot start the exporter: {exc}")
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        return ExportRun(None, f"the export ran past its timeout of {timeout:g} s")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    text = output.decode(errors="replace").strip()
    try:
        if proc.returncode != 0:
            return ExportRun(None, f"the exporter failed (exit code {proc.returncode}): {text[-4000:]}")
        errors = [line for line in text.splitlines() if ": error" in line or line.startswith("error:")]
        if errors:
            return ExportRun(None, "\n".join(errors)[-4000:])
        if not out.exists():
            return ExportRun(None, f"the exporter wrote no output for {module}: {text[-2000:]}")
        return ExportRun(out.read_text(encoding="utf-8"), "")
    finally:
        out.unlink(missing_ok=True)
