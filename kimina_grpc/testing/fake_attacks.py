"""The stand-in REPL's attacks: what `#eval` in a proof could do to the machine it runs on
(IO.FS.writeFile, IO.Process.spawn, raw syscalls through the FFI...), one function per directive
verb; each reports its outcome as the text of an info message, the way `#eval` output comes back.
The verbs are listed in fake_repl's manual (`python -m kimina_grpc.testing.fake_repl --help`)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def attack(verb: str, arg: str) -> str:
    """Try one attack; say what happened."""
    try:
        return f"{verb} {arg}: ok {ATTACKS[verb](arg)}".rstrip()
    except Exception as exc:
        return f"{verb} {arg}: failed: {type(exc).__name__}: {exc}"


def _write(arg: str) -> str:
    path, _, text = arg.partition(" ")
    Path(path).write_text(text)
    return ""


def _read(arg: str) -> str:
    return Path(arg).read_bytes()[:4096].decode(errors="replace")


def _environ(arg: str) -> str:
    pid = {"self": os.getpid(), "parent": os.getppid()}.get(arg) or int(arg)
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return " ".join(item.decode(errors="replace") for item in raw.split(b"\0") if item)


def _connect(arg: str) -> str:
    host, port = arg.split()
    with socket.create_connection((host, int(port)), timeout=2) as conn:
        conn.sendall(b"stolen\n")
    return ""


def _signal(arg: str) -> str:
    who, _, sig = arg.partition(" ")
    pid = os.getppid() if who == "parent" else int(who)
    os.kill(pid, getattr(signal, sig or "SIGKILL"))
    return ""


def _spawn(arg: str) -> str:
    seconds, marker = arg.split()
    code = f"import time; time.sleep({float(seconds)})"
    child = subprocess.Popen(
        [sys.executable, "-c", code, marker],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return f"pid {child.pid}"


def _daemon(arg: str) -> str:
    seconds, marker = arg.split()
    code = (
        "import os, subprocess, sys; os.setsid(); "
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep({float(seconds)})', {marker!r}],"
        " stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, stdin=subprocess.DEVNULL)  # the middle one exits
    return "ok"


def _reopen(arg: str) -> str:
    fd, mode = arg.split()
    with open(f"/proc/self/fd/{int(fd)}", "rb" if mode == "r" else "wb", buffering=0):
        return "opened"


def _fill_tmp(arg: str) -> str:
    return _fill(f"/tmp/kimina-fill-{os.getpid()}-{time.monotonic_ns()} {arg}")


def _grandchild(arg: str) -> str:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return f"pid {child.pid}"


def _fill(arg: str) -> str:
    path, mb = arg.rsplit(" ", 1)
    block = b"\0" * (1 << 20)
    written = 0
    with open(path, "wb") as f:
        try:
            for _ in range(int(mb)):
                f.write(block)
                f.flush()
                written += 1
        except OSError as exc:
            raise OSError(f"{exc} after {written} MiB") from None
    return f"{written} MiB"


def _symlink(arg: str) -> str:
    link, target = arg.split()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(target, link)
    return ""


def _fifo(arg: str) -> str:
    os.mkfifo(arg)
    return ""


# The daemon of `swap`: what a proof's `IO.Process.spawn` can leave running in its box.
_SWAPPER = """
import glob, os, sys, time
pattern, target = sys.argv[1], sys.argv[2]
end = time.monotonic() + 120
while time.monotonic() < end:
    for path in glob.glob(pattern):
        if os.path.isfile(path) and not os.path.islink(path):
            try:
                os.unlink(path)
                os.mkfifo(path) if target == "fifo" else os.symlink(target, path)
            except OSError:
                pass
    time.sleep(0.001)
"""


def _swap(arg: str) -> str:
    pattern, target = arg.split()
    child = subprocess.Popen(
        [sys.executable, "-c", _SWAPPER, pattern, target],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return f"pid {child.pid}"


def _libc_call(name: str, *args: Any) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    result = int(getattr(libc, name)(*args))
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


# The attacks' syscall numbers, from the kernel's tables (arch/x86/entry/syscalls/syscall_64.tbl,
# include/uapi/asm-generic/unistd.h), not from the server's seccomp filter: a wrong number there
# must not be mirrored here (tests/test_header_rule.py checks both against this machine's headers).
SYSCALLS = {
    "x86_64": {"add_key": 248, "io_uring_setup": 425},
    "aarch64": {"add_key": 217, "io_uring_setup": 425},
}


def _syscall(name: str, *args: Any) -> int:
    number = SYSCALLS.get(platform.machine(), {}).get(name)
    if number is None:
        raise OSError(f"no syscall number for {name} on {platform.machine()}")
    return _libc_call("syscall", ctypes.c_long(number), *args)


def _ptrace(arg: str) -> str:
    pid = os.getppid() if arg == "parent" else int(arg)
    _libc_call("ptrace", ctypes.c_long(16), ctypes.c_long(pid), None, None)  # PTRACE_ATTACH
    os.waitpid(pid, 0x40000000)  # __WALL
    _libc_call("ptrace", ctypes.c_long(17), ctypes.c_long(pid), None, None)  # PTRACE_DETACH
    return "attached"


def _proc_mem(arg: str) -> str:
    os.close(os.open(f"/proc/{int(arg)}/mem", os.O_RDWR))
    return "opened for writing"


def _keyctl(arg: str) -> str:
    data = b"box-data"
    description = f"kimina-attack-{os.getpid()}".encode()
    serial = _syscall("add_key", b"user", description, data, ctypes.c_size_t(len(data)), ctypes.c_int(-4))
    return f"key {serial} ({description.decode()})"


def _unshare(arg: str) -> str:
    _libc_call("unshare", ctypes.c_int(0x10000000))  # CLONE_NEWUSER
    return ""


def _io_uring(arg: str) -> str:
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    fd = _syscall("io_uring_setup", ctypes.c_uint(4), params)
    os.close(fd)
    return f"fd {fd}"


def _unix(arg: str) -> str:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(2)
        conn.connect(arg)
        conn.sendall(b"stolen\n")
    return ""


ATTACKS = {
    "write": _write,
    "read": _read,
    "environ": _environ,
    "connect": _connect,
    "signal": _signal,
    "spawn": _spawn,
    "daemon": _daemon,
    "reopen": _reopen,
    "fill-tmp": _fill_tmp,
    "fill": _fill,
    "grandchild": _grandchild,
    "symlink": _symlink,
    "fifo": _fifo,
    "swap": _swap,
    "ptrace": _ptrace,
    "proc-mem": _proc_mem,
    "keyctl": _keyctl,
    "unshare": _unshare,
    "io-uring": _io_uring,
    "unix": _unix,
}
