"""One run of the ast_export tool (`lake exe ast-export [--one] Module`): in its own process group, in
the same box and limits as a REPL (it elaborates code too), with a timeout that kills the group.

The tool writes its JSON to a file. The server never opens that file: a process the code started
could have made it a symlink to a host file (which the server would read with its own rights), a FIFO
(a read that never returns) or /dev/zero (one that never ends). Once the tool has exited, a shell
beside it, with the box's own rights and view, copies the file to its stdout; the tool's own output
goes to stderr. What that copy can read, the code could read anyway; the server reads the pipe up to
a size bound, and keeps only the tail of stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from kimina_grpc.repl import reaper
from kimina_grpc.repl.sandbox import NO_LIMITS, OFF, Box, Limits

# $1 is the output file; the rest is the tool's command line. The tool's exit code is the script's.
_COPY_OUT = 'out=$1; shift; mkdir -p -- "${out%/*}" && "$@" >&2 || exit; [ -f "$out" ] || exit 0; exec cat -- "$out"'
_TAIL = 64 << 10


@dataclass(frozen=True, slots=True)
class ExportRun:
    ast: str | None
    """The exported JSON text, when the tool wrote one and reported no Lean error."""
    error: str
    """Why there is no AST (tool failure, Lean's error messages, timeout); empty on success."""


def output_path(module: str) -> str:
    """Where ast_export writes a module's tree, relative to its project: .lake/build/lib/<A/B/C>.out.json."""
    return ".lake/build/lib/" + module.replace(".", "/") + ".out.json"


@dataclass(frozen=True, slots=True)
class Mounts:
    """What the box of one export needs beyond a REPL's (see Box.argv)."""

    binds: Sequence[tuple[str, str]] = ()
    tmpfs: Sequence[str] = ()
    files: Sequence[tuple[int, str]] = ()


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes | None:
    """Everything until EOF, or None as soon as it passes `limit` bytes."""
    data = bytearray()
    while chunk := await stream.read(1 << 16):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


async def _tail(stream: asyncio.StreamReader, keep: bytearray) -> None:
    while chunk := await stream.read(1 << 16):
        keep += chunk
        del keep[:-_TAIL]


async def export_module(
    argv: tuple[str, ...],
    cwd: str,
    module: str,
    *,
    one: bool,
    timeout: float,
    max_bytes: int,
    box: Box = OFF,
    limits: Limits = NO_LIMITS,
    mounts: Mounts | None = None,
) -> ExportRun:
    """Run the exporter for `module` in the project `cwd`; its output (at most `max_bytes`) comes
    back through a pipe (see the module's doc)."""
    mounts = mounts or Mounts()
    command = ["/bin/sh", "-c", _COPY_OUT, "sh", output_path(module), *argv, *(["--one"] if one else []), module]
    try:
        proc = await asyncio.create_subprocess_exec(
            *box.argv(
                command,
                cwd=cwd,
                limits=limits,
                binds=mounts.binds,
                tmpfs=mounts.tmpfs,
                files=mounts.files,
                keep=argv[:1],
            ),
            cwd=cwd,
            env=box.environ(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a timeout kills its group, never the server
            pass_fds=[fd for fd, _ in mounts.files],
        )
    except (OSError, RuntimeError) as exc:
        return ExportRun(None, f"cannot start the exporter: {exc}")
    reaper.track(proc.pid)
    assert proc.stdout is not None and proc.stderr is not None
    said = bytearray()
    tail = asyncio.ensure_future(_tail(proc.stderr, said))
    try:
        async with asyncio.timeout(timeout):
            out = await _read_capped(proc.stdout, max_bytes)
            if out is None:
                return ExportRun(
                    None, f"the exporter's output is over {max_bytes} bytes (LEAN_SERVER_MAX_MESSAGE_BYTES)"
                )
            await proc.wait()
            await tail
    except TimeoutError:
        return ExportRun(None, f"the export ran past its timeout of {timeout:g} s")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        reaper.untrack(proc.pid)
        tail.cancel()  # an unboxed daemon may hold stderr open
    text = said.decode(errors="replace").strip()
    if proc.returncode != 0:
        return ExportRun(None, f"the exporter failed (exit code {proc.returncode}): {text[-4000:]}")
    errors = [line for line in text.splitlines() if ": error" in line or line.startswith("error:")]
    if errors:
        return ExportRun(None, "\n".join(errors)[-4000:])
    if not out:
        return ExportRun(None, f"the exporter wrote no output for {module}: {text[-2000:]}")
    return ExportRun(out.decode("utf-8", errors="replace"), "")
