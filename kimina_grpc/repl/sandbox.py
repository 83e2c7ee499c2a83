"""How a REPL or exporter process is boxed: its command line (exec wrappers and bubblewrap), its
environment (an allow-list) and its resource limits.

The code a REPL runs comes from a model: `#eval` runs arbitrary IO with the rights of the process
(write files, spawn processes, open sockets). With bubblewrap (`LEAN_SERVER_SANDBOX=bwrap|auto`) a
process sees the filesystem read-only, a private size-bounded /tmp, no network, its own PID, IPC and
UTS namespaces (it cannot see or signal the server or other REPLs), a new session (no terminal to
inject into), no capabilities and no_new_privs; secrets the server knows of (API key file, TLS key,
Kubernetes service account, ~/.ssh...) are masked. Without it only the limits, the environment
allow-list and the parent-death signal apply.

Nothing runs in Python between fork and exec (gRPC's threads make that unsafe), so every limit is set
by an exec wrapper: util-linux's `setpriv --pdeathsig KILL` (the process dies with the server) and
`prlimit` (address space, file size, core dumps, process count). With the box, `bwrap --die-with-parent
--unshare-pid` carries it inward: when bwrap dies the box's init dies, and with it every process of its
PID namespace, whatever `lake env` or the proof started. Without the box, the REPL under `lake env`
gets its own parent-death signal (lake's child does not inherit lake's), but a process a proof starts
in a new session outlives the server.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fnmatch
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

_PR_SET_DUMPABLE = 4
SandboxMode = Literal["auto", "bwrap", "off"]
LINUX = sys.platform.startswith("linux")

# What Lean, Lake and elan read from the environment; nothing else reaches a REPL. KIMINA_FAKE_* are
# the stand-in REPL's knobs (test double only; no secret has that prefix).
DEFAULT_ENV_ALLOW = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "LD_LIBRARY_PATH",
    "ELAN",
    "ELAN_HOME",
    "ELAN_TOOLCHAIN",
    "LAKE",
    "LAKE_HOME",
    "LAKE_NO_CACHE",
    "LAKE_ARTIFACT_CACHE",
    "LEAN",
    "LEAN_PATH",
    "LEAN_SRC_PATH",
    "LEAN_SYSROOT",
    "LEAN_CC",
    "LEAN_AR",
    "LEAN_NUM_THREADS",
    "LEAN_STACK_SIZE_KB",
    "LEAN_ABORT_ON_PANIC",
    "KIMINA_FAKE_*",
)
# The server's own settings (the API key among them) never reach a REPL, whatever the allow-list says.
_NEVER = "LEAN_SERVER_*"

# Secrets that commonly sit on a server's filesystem; masked inside the box when they exist.
_HOME_SECRETS = (".ssh", ".aws", ".azure", ".kube", ".docker", ".gnupg", ".netrc", ".git-credentials", ".pypirc")
_SYSTEM_SECRETS = ("/var/run/secrets", "/run/secrets", "/etc/ssl/private")
# Masked wholesale by fresh mounts inside the box.
_FRESH = ("/tmp", "/dev", "/proc", "/run")


def allowed_env(source: Mapping[str, str], allow: Iterable[str]) -> dict[str, str]:
    """The variables of `source` whose names match a pattern of `allow` (fnmatch), never LEAN_SERVER_*."""
    patterns = tuple(allow)
    return {
        k: v
        for k, v in source.items()
        if any(fnmatch.fnmatchcase(k, p) for p in patterns) and not fnmatch.fnmatchcase(k, _NEVER)
    }


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
    """RLIMIT_NPROC: counted per user id by the kernel (all of the uid's processes and threads, not
    per REPL), ignored for root; a fork-bomb brake, not an exact bound (the pod's PID limit is)."""


@dataclass(frozen=True, slots=True)
class Box:
    """How processes are boxed. `bwrap` is the bubblewrap binary, or None for no box."""

    bwrap: str | None = None
    tmp_bytes: int = 512 << 20
    """Size of the box's private /tmp (a tmpfs: it counts as the box's memory)."""
    hide: tuple[str, ...] = ()
    """Paths masked inside the box (directories get an empty tmpfs, files /dev/null)."""
    env_allow: tuple[str, ...] = DEFAULT_ENV_ALLOW

    @property
    def enabled(self) -> bool:
        return self.bwrap is not None

    @property
    def name(self) -> str:
        return "bwrap" if self.enabled else "off"

    def environ(
        self, extra: Mapping[str, str] | None = None, source: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The environment of a boxed process: the allow-listed part of the server's, plus `extra`."""
        env = allowed_env(os.environ if source is None else source, self.env_allow)
        env.update({k: v for k, v in (extra or {}).items() if not fnmatch.fnmatchcase(k, _NEVER)})
        return env

    def argv(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        limits: Limits | None = None,
        binds: Sequence[tuple[str, str]] = (),
        tmpfs: Sequence[str] = (),
        files: Sequence[tuple[int, str]] = (),
    ) -> list[str]:
        """The full command line: limits, then the box (or the parent-death wrapper), then `argv`.

        In the box: `binds` are (host path, box path) pairs mounted writable, `tmpfs` paths get a
        private empty tmpfs, `files` are (fd, box path): the file is created from the fd's content.
        """
        command = list(argv)
        if not LINUX:
            return command
        wrapped = [*_die_with(os.getpid()), *_rlimits(limits or NO_LIMITS)]
        if self.bwrap is None:
            return [*wrapped, *_through_lake(command, _setpriv())]
        keep = (command[0] if command else None, cwd)
        return [*wrapped, *self.bwrap_args(cwd=cwd, binds=binds, tmpfs=tmpfs, files=files, keep=keep), *command]

    def bwrap_args(
        self,
        *,
        cwd: str | None = None,
        binds: Sequence[tuple[str, str]] = (),
        tmpfs: Sequence[str] = (),
        files: Sequence[tuple[int, str]] = (),
        keep: Iterable[str | None] = (),
    ) -> list[str]:
        """`keep`: paths the command needs (its program, its cwd): where one lies under a fresh
        mount (/tmp, /run), its top directory there is bound back read-only, with this server's
        interpreter and package (a checkout or virtualenv under /tmp, as CI clones are)."""
        assert self.bwrap is not None
        args = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        args += ["--size", str(self.tmp_bytes), "--tmpfs", "/tmp"]
        if os.path.isdir("/run"):
            args += ["--tmpfs", "/run"]
        for path in _under_fresh_mounts([*keep, sys.prefix, sys.executable, str(Path(__file__).resolve().parents[2])]):
            args += ["--ro-bind", path, path]
        for path in self.hide:
            args += _mask(path)
        for src, dst in binds:
            args += ["--bind", src, dst]
        for path in tmpfs:
            args += ["--tmpfs", path]
        for fd, dst in files:
            args += ["--perms", "0600", "--file", str(fd), dst]
        args += [
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
        if cwd is not None:
            args += ["--chdir", cwd]
        return [*args, "--"]


OFF = Box()
NO_LIMITS = Limits()


def _under_fresh_mounts(paths: Iterable[str | None]) -> list[str]:
    """For each path under /tmp or /run (which the box replaces), its top directory there."""
    tops: list[str] = []
    for path in paths:
        if not path or not os.path.isabs(path):
            continue
        for candidate in {os.path.abspath(path), os.path.realpath(path)}:
            parts = Path(candidate).parts
            if len(parts) > 2 and parts[1] in ("tmp", "run"):
                top = os.path.join("/", parts[1], parts[2])
                if os.path.exists(top) and top not in tops:
                    tops.append(top)
    return tops


def _mask(path: str) -> list[str]:
    real = os.path.realpath(path)
    if any(real == root or real.startswith(root + "/") for root in _FRESH):
        return []  # inside a fresh mount already
    if os.path.isdir(real):
        return ["--tmpfs", real]
    if os.path.exists(real):
        return ["--ro-bind", "/dev/null", real]
    return []


def undumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0): /proc/PID of this process becomes root's, so a process of the same
    uid (an unboxed REPL) can neither read its environment and memory nor ptrace it."""
    if not LINUX:
        return False
    return prctl(_PR_SET_DUMPABLE, 0)


def prctl(option: int, value: int) -> bool:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return int(libc.prctl(option, value, 0, 0, 0)) == 0


def _tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{why} needs util-linux's `{name}` on PATH (apt-get install util-linux)")
    return path


def _rlimits(limits: Limits) -> list[str]:
    # Core dumps are always off: a dump of a Mathlib REPL is gigabytes and may hold other proofs.
    args = [_tool("prlimit", "limiting a REPL"), "--core=0"]
    if limits.address_space:
        args.append(f"--as={limits.address_space}:{limits.address_space}")
    if limits.file_size:
        args.append(f"--fsize={limits.file_size}:{limits.file_size}")
    if limits.processes:
        args.append(f"--nproc={limits.processes}:{limits.processes}")
    return [*args, "--"]


def _setpriv() -> list[str]:
    return [_tool("setpriv", "a REPL that dies with the server"), "--pdeathsig", "KILL", "--"]


# Runs after the parent-death signal is set: a parent that died before that (between fork and prctl)
# would never signal, so the child checks that its parent is still the server and gives up otherwise.
_STILL_MY_PARENT = 'if [ "$PPID" != "$0" ]; then exit 137; fi; exec "$@"'


def _die_with(server_pid: int) -> list[str]:
    """Dies with the server (SIGKILL when it dies), even if it dies while this process starts. The
    box's own --die-with-parent covers the processes inside; this covers bwrap itself too."""
    return [*_setpriv(), "/bin/sh", "-c", _STILL_MY_PARENT, str(server_pid)]


def _through_lake(argv: list[str], death: list[str]) -> list[str]:
    """`lake env X` runs X as lake's child, and a parent-death signal is not inherited: X gets its own,
    so it dies when lake does (which dies with the server)."""
    if len(argv) >= 3 and os.path.basename(argv[0]) == "lake" and argv[1] == "env":
        return [*argv[:2], *death, *argv[2:]]
    return argv


def default_hide(extra: Iterable[str | Path] = ()) -> tuple[str, ...]:
    """Secrets to mask in the box: well-known locations, the server's config files and `extra`."""
    home = Path.home()
    paths = [*_SYSTEM_SECRETS, *(str(home / name) for name in _HOME_SECRETS)]
    paths += [str(home / ".config" / "kimina-grpc"), str(home / ".config" / "gcloud"), str(Path.cwd() / ".env")]
    paths += [str(p) for p in extra]
    return tuple(dict.fromkeys(paths))


def probe(box: Box, timeout: float = 20.0) -> str | None:
    """Run `true` in the box once; None when it works, else why not."""
    if box.bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        done = subprocess.run(
            [*box.bwrap_args(cwd="/"), "true"],
            env=box.environ(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap did not run: {exc}"
    if done.returncode != 0:
        return f"bwrap failed (exit code {done.returncode}): {done.stderr.strip()[-500:]}"
    return None


@dataclass(frozen=True, slots=True)
class Resolved:
    box: Box
    warning: str | None = None
    """Set when processes run unboxed (shown at start, in GetServerInfo and as a metric)."""


def resolve(mode: SandboxMode, *, tmp_bytes: int, hide: tuple[str, ...], env_allow: tuple[str, ...]) -> Resolved:
    """The box for LEAN_SERVER_SANDBOX: `bwrap` must work (else RuntimeError), `auto` falls back to
    no box with a warning, `off` is no box (with a warning too)."""
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
        box = Box(bwrap=path, tmp_bytes=tmp_bytes, hide=hide, env_allow=env_allow)
        reason = probe(box)
        if reason is None:
            return Resolved(box)
    if mode == "bwrap":
        raise SandboxUnavailable(f"LEAN_SERVER_SANDBOX=bwrap but {reason}")
    return Resolved(
        unboxed,
        f"NO SANDBOX: {reason}; proofs run code with the server's rights (files, processes, network). "
        "Install bubblewrap, or set LEAN_SERVER_SANDBOX=off to accept this",
    )
