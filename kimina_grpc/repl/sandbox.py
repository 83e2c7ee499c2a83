"""How a REPL or exporter process is boxed: its command line (bubblewrap's mounts and namespaces
around the exec wrappers of wrappers.py) and its resource limits; and which box LEAN_SERVER_SANDBOX
gets on this machine (`resolve`, which probes bubblewrap). The environment's allow-list is
environment.py's, the secrets masked masks.py's, the seccomp filter seccomp.py's.

The code a REPL runs comes from a model: `#eval` runs arbitrary IO with the rights of the process
(write files, spawn processes, open sockets). With bubblewrap (`LEAN_SERVER_SANDBOX=bwrap|auto`) a
process sees the filesystem read-only, a private size-bounded /tmp and /dev/shm (every other fresh
mount is read-only: /dev, /proc, /run, the masks), no network, its own user (no further user
namespaces), PID, IPC and UTS namespaces (it cannot see or signal the server or other REPLs), a new
session (no terminal to inject into), no capabilities, no_new_privs and a seccomp filter (seccomp.py:
no ptrace, keyrings, io_uring, bpf, new namespaces, mounts, chroot or unix sockets); secrets the server
knows of (API key file, TLS key, Kubernetes service account, ~/.ssh...) are masked. Without it only the
limits, the environment allow-list and the parent-death signal apply.

Every limit is set by an exec wrapper (wrappers.py: nothing runs in Python between fork and exec):
`setpriv --pdeathsig KILL` (the process dies with the server) and `prlimit`. With the box, `bwrap --die-with-parent
--unshare-pid` carries it inward: when bwrap dies the box's init dies, and with it every process of its
PID namespace, whatever `lake env` or the proof started (the seccomp filter and the read-only /proc
keep the proof from reaching into the init, by ptrace or /proc/1/mem, to clear its parent-death
signal). Without the box, the REPL under `lake env` gets its own parent-death signal (lake's child
does not inherit lake's), but a process a proof starts in a new session outlives the server.

The process count (RLIMIT_NPROC) is set inside the box, after bubblewrap made the box's user
namespace: the kernel (>= 5.14) then counts it per box, not per user id. It is never enforced on root.

A server running as root starts bubblewrap as another uid (Box.uid, 65534 by default): bubblewrap maps
the box's user to the uid that starts it, so a box started by root is host root inside (uid_map
`0 0 1`) and reads every root-only file; as nobody it reads what is world-readable only, and the
process count binds. What the box runs (the REPL, the project, the toolchain) must then be readable
by that uid.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from kimina_grpc.repl import environment, seccomp, wrappers
from kimina_grpc.repl.environment import DEFAULT_ENV_ALLOW
from kimina_grpc.repl.masks import binds_and, default_hide, masks, under_fresh_mounts, usable
from kimina_grpc.repl.wrappers import LINUX, undumpable

# The box's face: with the box's own names, the pieces the service reads from here to make one.
__all__ = [
    "DEFAULT_ENV_ALLOW",
    "NO_LIMITS",
    "OFF",
    "SHM_BYTES",
    "Box",
    "Limits",
    "Resolved",
    "SandboxMode",
    "SandboxUnavailable",
    "default_hide",
    "probe",
    "resolve",
    "undumpable",
]

SandboxMode = Literal["auto", "bwrap", "off"]
SHM_BYTES = 64 << 20
"""Size of the box's /dev/shm (POSIX shared memory and semaphores)."""
_RO_TMPFS_BYTES = 1 << 20
"""Size of the read-only tmpfs mounts (/run, masked directories): only their mount points live there."""


class SandboxUnavailable(RuntimeError):
    """LEAN_SERVER_SANDBOX=bwrap, and bubblewrap cannot box here."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of a process and everything it starts (rlimits are inherited)."""

    address_space: int | None = None
    """RLIMIT_AS in bytes (importing Mathlib needs >= 9 GB)."""
    file_size: int | None = None
    """RLIMIT_FSIZE: the largest file the process may write."""
    processes: int | None = None
    """RLIMIT_NPROC (processes and threads). In the box it is set inside the box's user namespace, so
    the kernel counts it per box; without the box it counts all of the user id's processes (the
    server's included). Never enforced on root: there only the pod's or container's PID limit bounds
    a fork bomb."""


@dataclass(frozen=True, slots=True)
class Box:
    """How processes are boxed. `bwrap` is the bubblewrap binary, or None for no box."""

    bwrap: str | None = None
    tmp_bytes: int = 512 << 20
    """Size of the box's private /tmp (a tmpfs: it counts as the box's memory), and of each extra
    tmpfs a caller asks for (Box.argv's `tmpfs`)."""
    hide: tuple[str, ...] = ()
    """Paths masked inside the box (directories get an empty tmpfs, files /dev/null)."""
    env_allow: tuple[str, ...] = DEFAULT_ENV_ALLOW
    uid: int | None = None
    """Host uid (and gid) the box runs as when the server is root: bubblewrap maps the box's user to
    the uid that starts it, and host root there reads every root-only file (/etc/shadow, keys off the
    hide list). None or 0: the server's own."""

    @property
    def enabled(self) -> bool:
        return self.bwrap is not None

    @property
    def runs_as(self) -> int | None:
        """The host uid boxed processes run as, when it is not the server's (see `uid`)."""
        if self.bwrap is None or not self.uid or not LINUX or os.geteuid() != 0:
            return None
        return self.uid

    @property
    def name(self) -> str:
        return "bwrap" if self.enabled else "off"

    def environ(
        self, extra: Mapping[str, str] | None = None, source: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The environment of a boxed process: the allow-listed part of the server's, plus `extra`."""
        return environment.environ(self.env_allow, extra, source)

    def argv(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        limits: Limits | None = None,
        binds: Sequence[tuple[str, str]] = (),
        tmpfs: Sequence[str] = (),
        files: Sequence[tuple[int, str]] = (),
        keep: Sequence[str] = (),
    ) -> list[str]:
        """The full command line: limits, then the box (or the parent-death wrapper), then `argv`.

        In the box: `binds` are (host path, box path) pairs mounted writable, `tmpfs` paths get a
        private empty tmpfs of `tmp_bytes`, `files` are (fd, box path): the file is created from the
        fd's content; `keep` are more paths the command needs (see bwrap_args), besides its program
        and cwd.
        """
        command = list(argv)
        if not LINUX:
            return command
        limits = limits or NO_LIMITS
        if self.bwrap is None:
            return [
                *wrappers.die_with(os.getpid()),
                *wrappers.rlimits(limits.address_space, limits.file_size, limits.processes),
                *wrappers.SUBREAPER,
                *wrappers.through_lake(command, wrappers.setpriv()),
            ]
        needed = (command[0] if command else None, cwd, *keep)
        # More paths it reads (no mask may hide them): its program found on PATH, absolute arguments.
        uses = [shutil.which(command[0]) or "", *(a for a in command[1:] if os.path.isabs(a))] if command else []
        # The process count is set inside, in the box's user namespace.
        inside = wrappers.rlimits(processes=limits.processes, core=False) if limits.processes else []
        return [
            *wrappers.die_with(os.getpid(), seccomp.program_file()),
            *wrappers.rlimits(limits.address_space, limits.file_size),
            *(wrappers.as_user(self.runs_as) if self.runs_as is not None else []),
            *self.bwrap_args(cwd=cwd, binds=binds, tmpfs=tmpfs, files=files, keep=needed, uses=uses),
            *inside,
            *command,
        ]

    def _env_paths(self) -> list[str]:
        """Absolute paths the box's environment names (PATH's entries, HOME, ELAN_HOME, ...)."""
        found: list[str] = []
        for value in self.environ().values():
            found += [p for p in value.split(os.pathsep) if os.path.isabs(p)]
        return found

    def bwrap_args(
        self,
        *,
        cwd: str | None = None,
        binds: Sequence[tuple[str, str]] = (),
        tmpfs: Sequence[str] = (),
        files: Sequence[tuple[int, str]] = (),
        keep: Iterable[str | None] = (),
        uses: Iterable[str] = (),
    ) -> list[str]:
        """bwrap and its options, up to `--`; its seccomp program is read from fd 9 (see wrappers.die_with).

        `keep`: paths the command needs (its program, its cwd): where one lies under a fresh mount
        (/tmp, /run), its top directory there is bound back read-only, with this server's interpreter
        and package (a checkout or virtualenv under /tmp, as CI clones are). Masks come after those
        binds (a secret under a bound-back directory is masked too), and the fresh mounts that need
        no writes are made read-only last, once every mount point in them exists. No directory mask
        hides a path of `keep` or `uses` (see masks.py)."""
        assert self.bwrap is not None
        keep = list(keep)
        args = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        args += ["--size", str(SHM_BYTES), "--tmpfs", "/dev/shm"]
        args += ["--size", str(self.tmp_bytes), "--tmpfs", "/tmp"]
        read_only = ["/dev", "/proc"]
        if os.path.isdir("/run"):
            args += ["--size", str(_RO_TMPFS_BYTES), "--tmpfs", "/run"]
            read_only.append("/run")
        kept = under_fresh_mounts([*keep, *_SERVER_PATHS])
        for path in kept:
            args += ["--ro-bind", path, path]
        needed = [cwd, *keep, *uses, *binds_and(binds, tmpfs, files), *self._env_paths(), *_SERVER_PATHS]
        for mask, directory in masks(self.hide, kept, needed, self.runs_as):
            if directory:
                args += ["--size", str(_RO_TMPFS_BYTES), "--tmpfs", mask]
                read_only.append(mask)
            else:
                args += ["--ro-bind", "/dev/null", mask]
        for src, dst in binds:
            args += ["--bind", src, dst]
        for path in tmpfs:
            args += ["--size", str(self.tmp_bytes), "--tmpfs", path]
        for fd, dst in files:
            args += ["--perms", "0600", "--file", str(fd), dst]
        for path in read_only:
            args += ["--remount-ro", path]
        args += [
            "--unshare-user",
            "--disable-userns",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "repl",
            "--new-session",
            "--die-with-parent",
            "--cap-drop",
            "ALL",
        ]
        if seccomp.program_file() is not None:
            args += ["--seccomp", str(wrappers.SECCOMP_FD)]
        if cwd is not None:
            args += ["--chdir", cwd]
        return [*args, "--"]


# This server's interpreter and package: a boxed command may be a module of ours (the stand-ins).
_SERVER_PATHS = (sys.prefix, sys.executable, str(Path(__file__).resolve().parents[2]))
OFF = Box()
NO_LIMITS = Limits()


def probe(box: Box, timeout: float = 20.0) -> str | None:
    """Run `true` in the box once, with the same wrappers, filter and namespaces as a REPL; None when
    it works, else why not."""
    if box.bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        done = subprocess.run(
            box.argv(["true"], cwd="/"),
            env=box.environ(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"bwrap did not run: {exc}"
    if done.returncode != 0:
        return f"bwrap failed (exit code {done.returncode}): {done.stderr.strip()[-500:]}"
    return None


@dataclass(frozen=True, slots=True)
class Resolved:
    box: Box
    warning: str | None = None
    """Set when processes run unboxed (shown at start, in GetServerInfo and as a metric)."""


def resolve(
    mode: SandboxMode,
    *,
    tmp_bytes: int,
    hide: tuple[str, ...],
    env_allow: tuple[str, ...],
    uid: int | None = None,
    needs: Iterable[str] = (),
) -> Resolved:
    """The box for LEAN_SERVER_SANDBOX: `bwrap` must work (else RuntimeError), `auto` falls back to
    no box with a warning, `off` is no box (with a warning too). `uid`: see Box.uid; `needs`: paths
    the boxed commands read (programs, projects), which that uid must reach, or the box runs as root
    (with a warning) rather than fail on every start."""
    unboxed = Box(tmp_bytes=tmp_bytes, hide=hide, env_allow=env_allow)
    if mode == "off":
        return Resolved(
            unboxed,
            "sandbox off (LEAN_SERVER_SANDBOX=off): proofs run code with the server's rights "
            "(files, processes, network)",
        )
    path = shutil.which("bwrap") if LINUX else None
    reason: str | None = "bubblewrap needs Linux" if not LINUX else "bubblewrap (bwrap) is not installed"
    if path is not None:
        box = Box(bwrap=path, tmp_bytes=tmp_bytes, hide=hide, env_allow=env_allow, uid=uid)
        reason = probe(box)
        as_root = ""
        if (runs_as := box.runs_as) is not None:
            # A box as root is still a box: better than none, or than one where nothing starts.
            blocked = [p for p in needs if os.path.exists(p) and not usable(p, runs_as)]
            if blocked:
                as_root = f"uid {runs_as} cannot read {blocked[0]}: make it readable by others"
            elif reason is not None:  # no unprivileged user namespaces, Ubuntu's AppArmor restriction
                as_root = f"bubblewrap cannot box as uid {runs_as} here ({reason})"
            if as_root:
                box = replace(box, uid=None)
                reason = probe(box)
        if reason is None:
            if seccomp.program_file() is None:
                return Resolved(box, f"the box has no seccomp filter on {platform.machine()} (only x86_64 and aarch64)")
            if LINUX and os.geteuid() == 0 and box.runs_as is None:
                why = as_root or "LEAN_SERVER_SANDBOX_UID=0"
                return Resolved(box, f"the box runs as host root ({why}): a proof reads root-only files")
            return Resolved(box)
    if mode == "bwrap":
        raise SandboxUnavailable(f"LEAN_SERVER_SANDBOX=bwrap but {reason}")
    return Resolved(
        unboxed,
        f"NO SANDBOX: {reason}; proofs run code with the server's rights (files, processes, network). "
        "Install bubblewrap, or set LEAN_SERVER_SANDBOX=off to accept this",
    )
