"""The test process's children: which are left, and waiting for none after a close."""

from __future__ import annotations

import psutil

from . import eventually


def children() -> list[psutil.Process]:
    """Live (non-zombie) descendants of this test process."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def described(processes: list[psutil.Process]) -> list[str]:
    """The processes' pids and command lines, for a failure message."""
    out = []
    for p in processes:
        try:
            out.append(f"{p.pid}: {' '.join(p.cmdline())[:300]}")
        except psutil.Error:
            out.append(f"{p.pid}: (gone)")
    return out


async def none_left(timeout: float = 10.0) -> None:
    """After a pool or server was closed: no process of ours is left. One the server killed may
    still be on its way out (a loaded machine): wait briefly, and name any that stays."""
    try:
        await eventually(lambda: not children(), timeout=timeout)
    except AssertionError:
        raise AssertionError(f"processes left after close: {described(children())}") from None


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


FAKE = "kimina_grpc.testing.fake_repl"  # the stand-in REPL's module, in its command line


def stand_ins() -> list[psutil.Process]:
    """The stand-in REPL processes (not their wrappers) under this test process."""
    return [p for p in children() if p.name().startswith("python") and FAKE in p.cmdline()]
