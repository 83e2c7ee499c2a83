"""A stand-in for `lake env CMD ARGS` that does, in the workspace it runs in, what Lake does where it
matters to the box (read from Lake's sources, src/lake, v4.10 to v4.29 and main):

- `importConfigFile` (Lake/Load/Lean/Elab.lean): the package's configuration trace
  (`.lake/lakefile.olean.trace`) is opened read-only under a shared `flock`; when it matches the
  lakefile's hash the compiled configuration is imported and nothing is written. When it does not
  (or is missing), Lake takes `.lake/lakefile.olean.lock` for writing and reconfigures: a write.
- `loadWorkspace` (Lake/Load/Workspace.lean): no `lake-manifest.json` means `lake update` (writes,
  clones); with one, `PackageEntry.materialize` (Lake/Load/Materialize.lean) runs `git rev-parse HEAD`
  in each dependency's checkout and, when that is not the manifest's revision (or git fails, e.g.
  "dubious ownership" of a checkout another user owns), fetches and checks out: network and writes.
  At the revision, `git diff` (a warning on local changes).
- then runs CMD as its child with the workspace's environment and exits with its exit code.

Errors are printed as Lake prints them (`error: ...`) with exit code 1."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path


def fail(text: str) -> None:
    print(f"error: {text}", file=sys.stderr)
    sys.exit(1)


def config_hash(root: Path) -> str:
    return hashlib.sha256((root / "lakefile.lean").read_bytes()).hexdigest()


def import_config(root: Path) -> None:
    trace = root / ".lake" / "lakefile.olean.trace"
    try:
        with open(trace, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            if json.loads(handle.read() or b"{}").get("configHash") == config_hash(root):
                return  # up to date: import the compiled configuration, write nothing
    except FileNotFoundError:
        pass
    try:  # reconfigure: the lock file, then the trace
        with open(root / ".lake" / "lakefile.olean.lock", "wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            trace.write_text(json.dumps({"configHash": config_hash(root)}))
    except OSError as exc:
        fail(f"{exc.filename}: {exc.strerror}")


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)


def materialize(root: Path) -> None:
    manifest = root / "lake-manifest.json"
    if not manifest.exists():
        try:  # `lake update`: resolve and clone every dependency, write the manifest
            (root / ".lake" / "packages").mkdir(parents=True, exist_ok=True)
            manifest.write_text(json.dumps({"packages": []}))
        except OSError as exc:
            fail(f"{exc.filename}: {exc.strerror}")
        return
    data = json.loads(manifest.read_text())
    for entry in data.get("packages", []):
        repo = root / data.get("packagesDir", ".lake/packages") / entry["name"]
        head = git(repo, "rev-parse", "HEAD")
        if head.returncode == 0 and head.stdout.strip() == entry["rev"]:
            if git(repo, "diff", "--exit-code", "HEAD").returncode:
                print(f"warning: {entry['name']}: repository '{repo}' has local changes", file=sys.stderr)
            continue
        fetched = git(repo, "fetch", "--tags", "--force", entry.get("url", "origin"))
        if fetched.returncode:
            fail(f"{entry['name']}: failed to fetch revision {entry['rev']}: {fetched.stderr.strip()}")


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "env":
        print("this stand-in knows `lake env CMD ARGS...` only", file=sys.stderr)
        return 2
    root = Path.cwd()
    import_config(root)
    materialize(root)
    return subprocess.call(argv[1:], env={**os.environ, "LAKE": "lake"})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
