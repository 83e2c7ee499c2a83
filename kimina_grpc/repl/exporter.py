"""One run of the ast_export tool (`lake exe ast-export [--one] Module`): in its own process group, in
the same box and limits as a REPL (it elaborates code too), with a timeout that kills the group, output
drained, and its JSON read from where it writes it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kimina_grpc.repl import reaper
from kimina_grpc.repl.sandbox import NO_LIMITS, OFF, Box, Limits


@dataclass(frozen=True, slots=True)
class ExportRun:
    ast: str | None
    """The exported JSON text, when the tool wrote one and reported no Lean error."""
    error: str
    """Why there is no AST (tool failure, Lean's error messages, timeout); empty on success."""


def output_path(project: Path, module: str) -> Path:
    """Where ast_export writes a module's tree: .lake/build/lib/<A/B/C>.out.json."""
    return project / ".lake" / "build" / "lib" / (module.replace(".", "/") + ".out.json")


@dataclass(frozen=True, slots=True)
class Mounts:
    """What the box of one export needs beyond a REPL's (see Box.argv)."""

    binds: Sequence[tuple[str, str]] = ()
    tmpfs: Sequence[str] = ()
    files: Sequence[tuple[int, str]] = ()


async def export_module(
    argv: tuple[str, ...],
    project: Path,
    module: str,
    *,
    one: bool,
    timeout: float,
    box: Box = OFF,
    limits: Limits = NO_LIMITS,
    mounts: Mounts | None = None,
    out: Path | None = None,
) -> ExportRun:
    """Run the exporter for `module`; the output file (`out`, by default where the tool writes it on
    the host) is read and removed."""
    out = out or output_path(project, module)
    mounts = mounts or Mounts()
    out.parent.mkdir(parents=True, exist_ok=True)  # nested modules: the tool does not create it
    out.unlink(missing_ok=True)
    command = [*argv, *(["--one"] if one else []), module]
    try:
        proc = await asyncio.create_subprocess_exec(
            *box.argv(
                command,
                cwd=str(project),
                limits=limits,
                binds=mounts.binds,
                tmpfs=mounts.tmpfs,
                files=mounts.files,
            ),
            cwd=project,
            env=box.environ(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a timeout kills its group, never the server
            pass_fds=[fd for fd, _ in mounts.files],
        )
    except (OSError, RuntimeError) as exc:
        return ExportRun(None, f"cannot start the exporter: {exc}")
    reaper.track(proc.pid)
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        return ExportRun(None, f"the export ran past its timeout of {timeout:g} s")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        reaper.untrack(proc.pid)
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
