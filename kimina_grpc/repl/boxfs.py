"""Files inside a box, read and written by the server without trusting anything the box controls.

Whatever lies in a box's writable places (its /tmp) was put there by the proof's code, and a process
the proof left behind may change it while the server looks: a symlink to a host file (which the
server, with its own rights and root, would follow: its /proc/self/environ, the API key file,
/etc/shadow), a FIFO (an open or read that never returns: the event loop stops), /dev/zero (a read
that never ends: the server runs out of memory). So:

- The box is seen through its init (bubblewrap's child, PID 1 of the box), whose root the box cannot
  change (no chroot, unshare or ptrace in the box: seccomp.py), never through a process the proof
  may have started. The init is pinned by an fd of its /proc directory before its root is opened.
- Every component is opened relative to the previous one with O_NOFOLLOW: a symlink anywhere fails.
- The file is opened O_NONBLOCK (a FIFO does not block the open), must be a regular file (fstat),
  and is read up to a size cap, which a file still growing cannot pass either.
- It all runs in a thread, off the event loop.

The writing side (into another box) walks the same way and creates the file O_EXCL|O_NOFOLLOW.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import stat
from collections.abc import Iterator

import psutil

MAX_BYTES = 256 << 20
"""The default cap of a read (a pickle of a proof's environment is kilobytes to megabytes)."""

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


class BoxFileError(OSError):
    """The file cannot be read from, or written into, the box safely; the message says why."""


def _parts(path: str) -> list[str]:
    parts = path.split("/")
    if not path.startswith("/") or any(p in ("", ".", "..") for p in parts[1:]):
        raise BoxFileError(f"{path!r} is not a plain absolute path")
    return parts[1:]


def _init_of(pid: int) -> int:
    """The box's init: the only child of the bubblewrap process `pid`."""
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        raise BoxFileError(f"the box's process {pid} is gone") from None
    if len(children) != 1:
        raise BoxFileError(f"the box of process {pid} has {len(children)} init processes, not one")
    return children[0].pid


def _open_root(pid: int) -> int:
    """An fd of the box's root directory, resolved through the box's init."""
    init = _init_of(pid)
    try:
        proc = os.open(f"/proc/{init}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise BoxFileError(f"the box's init {init} is gone: {exc}") from None
    try:
        # The fd pins that process: if its pid was reused meanwhile, its parent shows it.
        with open(os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc), "rb") as f:
            parent = int(f.read().rpartition(b")")[2].split()[1])
        root = os.open("root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc)
    except (OSError, ValueError, IndexError) as exc:
        raise BoxFileError(f"cannot open the root of the box of process {pid}: {exc}") from None
    finally:
        os.close(proc)
    if parent != pid:
        os.close(root)
        raise BoxFileError(f"process {init} is no longer the init of the box of process {pid}")
    return root


@contextlib.contextmanager
def _parent(pid: int, path: str) -> Iterator[tuple[int, str]]:
    """(an fd of the directory holding `path` in the box, the file's name), every directory opened
    without following a symlink."""
    *dirs, name = _parts(path)
    fd = _open_root(pid)
    try:
        for part in dirs:
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except OSError as exc:
                raise BoxFileError(f"{path} in the box: {part} is not a plain directory ({exc.strerror})") from None
            os.close(fd)
            fd = nxt
        yield fd, name
    finally:
        os.close(fd)


def read_file(pid: int, path: str, max_bytes: int = MAX_BYTES) -> bytes:
    """The content of the regular file `path` in the box of process `pid` (blocking; see
    `read_from_box`)."""
    with _parent(pid, path) as (parent, name):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            raise BoxFileError(f"cannot open {path} in the box: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BoxFileError(f"{path} in the box is not a regular file")
            if st.st_size > max_bytes:
                raise BoxFileError(f"{path} in the box has {st.st_size} bytes, over the limit of {max_bytes}")
            data = bytearray()
            while chunk := os.read(fd, min(_CHUNK, max_bytes + 1 - len(data))):
                data += chunk
                if len(data) > max_bytes:
                    raise BoxFileError(f"{path} in the box grew past the limit of {max_bytes} bytes")
            return bytes(data)
        finally:
            os.close(fd)


def write_file(pid: int, path: str, data: bytes) -> None:
    """Create `path` (it must not exist) in the box of process `pid`, readable by its owner only
    (blocking; see `write_into_box`)."""
    with _parent(pid, path) as (parent, name):
        try:
            with _as_owner_of(parent):
                fd = os.open(
                    name,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                    0o600,
                    dir_fd=parent,
                )
        except OSError as exc:
            raise BoxFileError(f"cannot create {path} in the box: {exc.strerror}") from None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            raise BoxFileError(f"cannot write {path} in the box: {exc.strerror}") from None
        finally:
            os.close(fd)


@contextlib.contextmanager
def _as_owner_of(folder: int) -> Iterator[None]:
    """A root server creates files in a box that runs as another uid (sandbox.Box.uid) as that uid:
    the box's tmpfs belongs to its user namespace, where root is not mapped (EOVERFLOW), and the
    file must be the box's to read. The filesystem uid is per thread (this runs in a worker thread)
    and is restored after."""
    st = os.fstat(folder)
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or st.st_uid == 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setfsgid(st.st_gid)
    libc.setfsuid(st.st_uid)
    try:
        yield
    finally:
        libc.setfsuid(0)
        libc.setfsgid(0)


def remove_file(pid: int, path: str) -> None:
    """Remove `path` from the box of process `pid` if it is there (never through a symlink)."""
    with _parent(pid, path) as (parent, name):
        try:
            os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise BoxFileError(f"cannot remove {path} from the box: {exc.strerror}") from None


async def read_from_box(pid: int, path: str, *, max_bytes: int = MAX_BYTES) -> bytes:
    """`read_file` in a thread. `pid` is the process the server started for the box (bubblewrap's:
    a Repl's `pid`), `path` the file's path inside the box. Raises BoxFileError."""
    return await asyncio.to_thread(read_file, pid, path, max_bytes)


async def write_into_box(pid: int, path: str, data: bytes) -> None:
    """`write_file` in a thread. Raises BoxFileError."""
    await asyncio.to_thread(write_file, pid, path, data)


async def remove_from_box(pid: int, path: str) -> None:
    """`remove_file` in a thread. Raises BoxFileError."""
    await asyncio.to_thread(remove_file, pid, path)
