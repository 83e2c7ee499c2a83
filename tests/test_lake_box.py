"""Lake in the box (issue 31 item 8): the REPL runs as `lake env .../repl` in the workspace, inside
bubblewrap with the filesystem read-only. What `lake env` needs there, read from Lake's sources
(tests/lake_standin.py says where): nothing writable when the workspace is built (a shared `flock` on
the configuration trace works on a read-only file), but git in every dependency's checkout, which git
refuses when another user owns it (the Docker image's root-owned workspace; in the box, every file of
a user the box does not map), and then Lake fetches and checks out. The box's environment gives git
`safe.directory=*` (environment.py); a stale workspace fails with Lake's own error and stays untouched."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimina_grpc.repl import ReplSpec, Verdict, split_header
from kimina_grpc.repl.sandbox import OFF, Box, probe
from kimina_grpc.supervisor import CheckOptions, PoolSettings, Supervisor
from kimina_grpc.testing import fake_repl_command

BWRAP = shutil.which("bwrap")
BOX = Box(bwrap=BWRAP)
_NO_BOX = "bubblewrap is not installed" if BWRAP is None else probe(BOX)
needs_bwrap = pytest.mark.skipif(_NO_BOX is not None, reason=f"bwrap cannot run here: {_NO_BOX}")
STANDIN = Path(__file__).with_name("lake_standin.py")
OTHER_USER = 10001  # the Docker image's server user; the workspace is root's there


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=k", "-c", "user.email=k@k", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A built workspace as the installer leaves it (outside /tmp, which the box replaces): mathlib4
    with its lakefile, an up-to-date configuration trace, a manifest and one dependency checkout at the
    manifest's revision; and a `lake` on bin/ that is the stand-in."""
    root = Path(tempfile.mkdtemp(prefix="kimina-lake-", dir="/var/tmp"))
    root.chmod(0o755)  # as an installed workspace is: readable by all
    project = root / "mathlib4"
    dep = project / ".lake" / "packages" / "batteries"
    dep.mkdir(parents=True)
    (project / "lakefile.lean").write_text('import Lake\nopen Lake DSL\nrequire "leanprover-community" / batteries\n')
    digest = hashlib.sha256((project / "lakefile.lean").read_bytes()).hexdigest()
    (project / ".lake" / "lakefile.olean.trace").write_text(json.dumps({"configHash": digest}))
    _git(dep, "init", "-q")
    (dep / "Batteries.lean").write_text("-- batteries\n")
    _git(dep, "add", "Batteries.lean")
    _git(dep, "commit", "-q", "-m", "batteries")
    url = "https://github.com/leanprover-community/batteries"
    packages = [{"name": "batteries", "type": "git", "url": url, "rev": _git(dep, "rev-parse", "HEAD")}]
    (project / "lake-manifest.json").write_text(json.dumps({"packagesDir": ".lake/packages", "packages": packages}))
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "lake").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))} "$@"\n')
    (bin_dir / "lake").chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path under `root`: (mode, mtime, content) — what a write would change."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        out[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, data)
    return out


async def check_through_lake(root: Path, box: Box) -> tuple[Verdict, str]:
    argv = ("lake", "env", *shlex.split(fake_repl_command()))
    env = {"PATH": f"{root / 'bin'}:{os.environ['PATH']}"}
    spec = ReplSpec(argv=argv, cwd=str(root / "mathlib4"), env=env, box=box)
    sup = Supervisor(PoolSettings(spec=spec, max_repls=1, import_cost_hint=0.1))
    await sup.start()
    try:
        code = "import Mathlib\n\ntheorem t : 1 + 1 = 2 := by norm_num"
        out = await sup.submit(split_header(code), CheckOptions(timeout=30)).future
        return out.verdict, out.error
    finally:
        await sup.close()


@pytest.mark.parametrize("box", [OFF, pytest.param(BOX, marks=needs_bwrap)], ids=["off", "bwrap"])
async def test_lake_env_starts_the_repl_in_a_workspace_another_user_owns(workspace: Path, box: Box) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving the workspace to another user needs root")
    for path in [workspace, *workspace.rglob("*")]:
        os.lchown(path, OTHER_USER, OTHER_USER)
    before = snapshot(workspace)
    verdict, error = await check_through_lake(workspace, box)
    assert verdict is Verdict.VALID, error
    if box.enabled:  # unboxed, git's `diff` refreshes the checkout's index where it may write
        assert snapshot(workspace) == before


@needs_bwrap
async def test_in_the_box_lake_writes_nothing_and_a_stale_workspace_fails_with_lakes_error(workspace: Path) -> None:
    before = snapshot(workspace)
    verdict, error = await check_through_lake(workspace, BOX)
    assert verdict is Verdict.VALID, error
    assert snapshot(workspace) == before  # the flock and git's reads wrote nothing
    # A lakefile changed after the build: Lake would reconfigure (a write), which the box refuses.
    with open(workspace / "mathlib4" / "lakefile.lean", "a") as f:
        f.write("-- changed\n")
    before = snapshot(workspace)
    verdict, error = await check_through_lake(workspace, BOX)
    assert verdict is Verdict.REPL_ERROR and "lakefile.olean.lock: Read-only file system" in error, error
    assert snapshot(workspace) == before
