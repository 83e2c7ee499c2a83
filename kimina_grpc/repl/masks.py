"""Where the box hides secrets: which ones (`default_hide`), and which paths get an empty read-only
tmpfs (directories) and which /dev/null (files), given what the box needs to see.

A mount on a file stays on the file it covered: once the file is replaced by rename (editors, config
management, certbot, Kubernetes' secret volumes swap a `..data` symlink) the box sees the new one. So
a secret file's directory is masked instead wherever the box needs nothing in it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

# Secrets that commonly sit on a server's filesystem; masked inside the box when they exist.
_HOME_SECRETS = (".ssh", ".aws", ".azure", ".kube", ".docker", ".gnupg", ".netrc", ".git-credentials", ".pypirc")
_SYSTEM_SECRETS = ("/var/run/secrets", "/run/secrets", "/etc/ssl/private")
# Replaced wholesale by fresh mounts inside the box; what lies under /tmp or /run is visible again
# only where its top directory is bound back (see Box.bwrap_args).
_FRESH = ("/tmp", "/dev", "/proc", "/run")


def default_hide(extra: Iterable[str | Path] = ()) -> tuple[str, ...]:
    """Secrets to mask in the box: well-known locations, the server's config files and `extra`."""
    home = Path.home()
    paths = [*_SYSTEM_SECRETS, *(str(home / name) for name in _HOME_SECRETS)]
    paths += [str(home / ".config" / "kimina-grpc"), str(home / ".config" / "gcloud"), str(Path.cwd() / ".env")]
    paths += [str(p) for p in extra]
    return tuple(dict.fromkeys(paths))


def masks(
    hide: Iterable[str], kept: Sequence[str], needed: Sequence[str | None], runs_as: int | None
) -> list[tuple[str, bool]]:
    """(path, is a directory) to mask, outermost first, none under another: a secret file's
    directory, unless the box needs something in it (`needed`: its program, cwd, PATH, the paths its
    environment names, the server's interpreter); only then the file itself. `runs_as`: the box's
    uid, when not the server's (what it cannot reach needs no mask)."""
    found: set[tuple[str, bool]] = set()
    for path in hide:
        if runs_as is not None and not _reachable(path, runs_as):
            continue  # the box's uid cannot reach it (and bubblewrap, as that uid, cannot mask it)
        mask, directory = _mask(path, kept)
        if not mask or directory:
            found.update([(mask, True)] if mask else [])
            continue
        folders = [f for f in _folders_of(path, kept) if _maskable(f, needed)]
        found.update((f, True) for f in folders)
        if not any(_under(mask, f) for f in folders):
            found.add((mask, False))
    out: list[tuple[str, bool]] = []
    for mask, directory in sorted(found, key=lambda m: (m[0].count("/"), m[0])):
        if not any(d and _under(mask, m) for m, d in out):
            out.append((mask, directory))
    return out


def under_fresh_mounts(paths: Iterable[str | None]) -> list[str]:
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


def _mask(path: str, kept: Sequence[str]) -> tuple[str, bool]:
    """(where to mask `path` in the box, whether it is a directory); ("", False) when the box cannot
    see it anyway: it does not exist, or it lies under a fresh mount and no directory bound back."""
    real = os.path.realpath(path)
    fresh = any(real == root or real.startswith(root + "/") for root in _FRESH)
    if fresh and not any(real == top or real.startswith(top + "/") for top in kept):
        return "", False
    if os.path.isdir(real):
        return real, True
    return (real, False) if os.path.exists(real) else ("", False)


def binds_and(binds: Sequence[tuple[str, str]], tmpfs: Sequence[str], files: Sequence[tuple[int, str]]) -> list[str]:
    """The box paths a command's own mounts use."""
    return [*(dst for _, dst in binds), *tmpfs, *(dst for _, dst in files)]


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _folders_of(path: str, kept: Sequence[str]) -> list[str]:
    """The directory holding `path` as named and the one holding what it resolves to (a symlink
    such as Kubernetes' `..data/key`), where the box would see them."""
    absolute = os.path.abspath(path)
    out = []
    for folder in (os.path.dirname(absolute), os.path.dirname(os.path.realpath(absolute))):
        mask, directory = _mask(folder, kept)
        if directory and mask not in out:
            out.append(mask)
    return out


def _maskable(folder: str, needed: Sequence[str | None]) -> bool:
    """Whether hiding `folder` hides nothing the box needs: it is not /, not a fresh mount, and
    holds none of `needed` (nor is one)."""
    if folder == "/" or folder in _FRESH:
        return False
    for path in needed:
        if not path or not os.path.isabs(path):
            continue
        for candidate in {os.path.abspath(path), os.path.realpath(path)}:
            if _under(candidate, folder):
                return False
    return True


def _reachable(path: str, uid: int) -> bool:
    """Whether `uid` (with gid `uid` and no other group) can look up `path`: every directory on the
    way lets it search. It may still not read the file itself (a mask costs nothing then)."""
    real = Path(os.path.realpath(path))
    return all(_allows(folder, uid, "x") for folder in reversed(real.parents))


def usable(path: str, uid: int) -> bool:
    """Whether `uid` (gid `uid`, no other group) can reach `path` and read it (list and enter it,
    for a directory)."""
    real = os.path.realpath(path)
    return _reachable(real, uid) and _allows(Path(real), uid, "rx" if os.path.isdir(real) else "r")


def _allows(path: Path, uid: int, what: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_uid == uid:
        bits = {"r": stat.S_IRUSR, "x": stat.S_IXUSR}
    elif st.st_gid == uid:
        bits = {"r": stat.S_IRGRP, "x": stat.S_IXGRP}
    else:
        bits = {"r": stat.S_IROTH, "x": stat.S_IXOTH}
    return all(st.st_mode & bits[c] for c in what)
