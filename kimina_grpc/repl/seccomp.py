"""The seccomp filter of the box: a classic-BPF program, built here, that bubblewrap installs
(`--seccomp FD`) on every process of the box after its set-up.

What it refuses, and why (each is something the review did from inside a box, or a way to the same):
- ptrace, process_vm_readv/writev, pidfd_getfd, kcmp: reaching into another process of the box. The
  box's init can be traced from inside, and a traced init can be made to clear its parent-death signal:
  the box would then outlive the server.
- keyctl, add_key, request_key: the kernel keyrings are not namespaced by the box (a key added inside
  landed in the host root user's keyring).
- io_uring_*, bpf, userfaultfd, perf_event_open: large kernel attack surface Lean never uses.
- unshare, setns, clone/clone3 with namespace flags, mount and the new mount API, umount2, pivot_root,
  chroot: a box that makes namespaces or moves its root chooses what the server sees through
  /proc/PID/root. clone3 answers ENOSYS rather than EPERM, so libc falls back to clone, whose flags a
  classic BPF program can read (clone3 passes them in memory it cannot).
- socket(AF_UNIX): the network namespace does not cover path sockets on the read-only view of the host
  (a database's or Docker's socket outside /tmp and /run); abstract sockets are per network namespace.
- any other syscall ABI than the native one (i386 and x32 on x86_64, arm32 on aarch64): each has its
  own syscall numbers, which this program does not list.

Everything else is allowed: threads (clone without namespace flags), fork and exec (lake env starts the
REPL), files, pipes, signals within the box. Denials answer EPERM: a program sees a failed call, not a
killed process.
"""

from __future__ import annotations

import atexit
import os
import platform
import shutil
import struct
import tempfile
from dataclasses import dataclass

# linux/filter.h, linux/seccomp.h, linux/audit.h
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
EPERM = 1
ENOSYS = 38

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (little-endian hosts:
# the low half of an argument comes first).
_NR, _ARCH, _ARG0_LOW = 0, 4, 16

AF_UNIX = 1
# Every CLONE_NEW* flag that clone(2) takes (CLONE_NEWTIME, 0x80, exists for clone3 and unshare only:
# in clone's flags that bit is part of the exit signal).
CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
_X32_SYSCALL_BIT = 0x40000000


@dataclass(frozen=True, slots=True)
class Arch:
    audit: int
    """AUDIT_ARCH_* of the native ABI."""
    denied: dict[str, int]
    """Syscalls refused with EPERM, by name (names for the tests and the reader)."""
    clone: int
    clone3: int
    socket: int
    x32: bool = False
    """x86_64: syscall numbers with the x32 bit set are another ABI."""


# The new mount API and io_uring have the same numbers on every architecture (added after 5.0).
_COMMON = {
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
}

# arch/x86/entry/syscalls/syscall_64.tbl
X86_64 = Arch(
    audit=0xC000003E,
    denied={
        "ptrace": 101,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "kcmp": 312,
        "add_key": 248,
        "request_key": 249,
        "keyctl": 250,
        "bpf": 321,
        "userfaultfd": 323,
        "perf_event_open": 298,
        "unshare": 272,
        "setns": 308,
        "mount": 165,
        "umount2": 166,
        "pivot_root": 155,
        "chroot": 161,
        **_COMMON,
    },
    clone=56,
    clone3=435,
    socket=41,
    x32=True,
)

# include/uapi/asm-generic/unistd.h (aarch64 uses the generic table)
AARCH64 = Arch(
    audit=0xC00000B7,
    denied={
        "ptrace": 117,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "kcmp": 272,
        "add_key": 217,
        "request_key": 218,
        "keyctl": 219,
        "bpf": 280,
        "userfaultfd": 282,
        "perf_event_open": 241,
        "unshare": 97,
        "setns": 268,
        "mount": 40,
        "umount2": 39,
        "pivot_root": 41,
        "chroot": 51,
        **_COMMON,
    },
    clone=220,
    clone3=435,
    socket=198,
)

ARCHES = {"x86_64": X86_64, "amd64": X86_64, "aarch64": AARCH64, "arm64": AARCH64}


def native() -> Arch | None:
    """The table of this machine's architecture, or None where there is none (no filter then)."""
    return ARCHES.get(platform.machine().lower())


class _Program:
    """A straight-line BPF program with forward jumps to labels (the only jumps seccomp needs)."""

    def __init__(self) -> None:
        self.code: list[tuple[int, int | str, int | str, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int, jt: int | str = 0, jf: int | str = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = bytearray()
        for at, (code, jt, jf, k) in enumerate(self.code):
            offsets = []
            for target in (jt, jf):
                offset = self.labels[target] - at - 1 if isinstance(target, str) else target
                if not 0 <= offset <= 255:
                    raise ValueError(f"BPF jump out of range at {at}: {offset}")
                offsets.append(offset)
            out += struct.pack("<HBBI", code, offsets[0], offsets[1], k & 0xFFFFFFFF)
        return bytes(out)


def program(arch: Arch) -> bytes:
    """The filter for `arch` as bubblewrap reads it: an array of struct sock_filter."""
    p = _Program()
    p.op(_LD_W_ABS, _ARCH)
    p.op(_JEQ, arch.audit, 1, 0)
    p.op(_RET, _ERRNO | EPERM)  # another ABI
    p.op(_LD_W_ABS, _NR)
    if arch.x32:
        p.op(_JGE, _X32_SYSCALL_BIT, "eperm", 0)
    for nr in sorted(set(arch.denied.values())):
        p.op(_JEQ, nr, "eperm", 0)
    p.op(_JEQ, arch.clone3, "enosys", 0)
    p.op(_JEQ, arch.clone, "clone", 0)
    p.op(_JEQ, arch.socket, "socket", 0)
    p.op(_RET, _ALLOW)
    p.label("clone")
    p.op(_LD_W_ABS, _ARG0_LOW)
    p.op(_JSET, CLONE_NAMESPACES, "eperm", 0)
    p.op(_RET, _ALLOW)
    p.label("socket")
    p.op(_LD_W_ABS, _ARG0_LOW)
    p.op(_JEQ, AF_UNIX, "eperm", 0)
    p.op(_RET, _ALLOW)
    p.label("eperm")
    p.op(_RET, _ERRNO | EPERM)
    p.label("enosys")
    p.op(_RET, _ERRNO | ENOSYS)
    return p.assemble()


_FILE: list[str] = []


def program_file() -> str | None:
    """The native program in a file of this server's (bubblewrap reads it through an fd the exec
    wrapper opens), written once (and again if something removed it, e.g. a /tmp cleaner); None on
    an architecture without a syscall table."""
    arch = native()
    if arch is None:
        return None
    if _FILE and os.path.exists(_FILE[0]):
        return _FILE[0]
    folder = tempfile.mkdtemp(prefix="kimina-seccomp-")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, "filter.bpf")
    with open(path, "xb") as f:
        f.write(program(arch))
    os.chmod(path, 0o444)
    os.chmod(folder, 0o755)  # not secret; readable by a server that runs bwrap as another user
    _FILE[:] = [path]
    return path
