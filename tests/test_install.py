"""tools/install_lean.sh with stand-ins for curl, git, elan and lake on PATH, recording their calls."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT

SCRIPT = ROOT / "tools" / "install_lean.sh"

FAKE = r"""#!/usr/bin/env bash
# Stand-in for {name}: record the call, then act just enough.
echo "{name} $* @ $(pwd)" >> "$FAKE_LOG"
case "{name}" in
  git)
    if [ "$1" = ls-remote ]; then
      [ -n "$FAKE_OFFLINE" ] && { echo "fatal: unable to access: Could not resolve host" >&2; exit 128; }
      for t in ${FAKE_TAGS:-v4.9.0 v4.10.0 v4.14.0 v4.19.0 v4.20.1 v4.21.0}; do printf 'abc\trefs/tags/%s\n' "$t"; done
      exit 0
    fi
    [ "$1" = clone ] || exit 0
    dest="${@: -1}"
    case "$dest" in *"$FAKE_FAIL_CLONE"*) [ -n "$FAKE_FAIL_CLONE" ] && { echo "network down" >&2; exit 128; } ;; esac
    mkdir -p "$dest" && echo "$5" > "$dest/TAG"
    case "$dest" in *ast_export*) echo 'require mathlib from git "..."' > "$dest/lakefile.lean" ;; esac ;;
  curl)
    out=""; while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
    {
      echo '#!/usr/bin/env bash'
      echo 'mkdir -p "$HOME/.elan/bin" && cp "$FAKE_BIN/elan.real" "$HOME/.elan/bin/elan"'
      echo 'echo "elan-init $*" >> "$FAKE_LOG"'
    } > "$out" ;;
  lake)
    if [ "$1 $2 $3" = "exe cache get" ] && [ -n "$FAKE_CACHE_FAILS" ]; then exit 1; fi ;;
esac
exit 0
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("git", "curl", "lake"):
        (bin_dir / name).write_text(FAKE.replace("{name}", name))
        (bin_dir / name).chmod(0o755)
    (bin_dir / "elan.real").write_text(FAKE.replace("{name}", "elan"))
    (bin_dir / "elan.real").chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("LEAN_SERVER_", "KIMINA_"))}
    return {
        **keep,
        "HOME": str(home),
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_BIN": str(bin_dir),
        "KIMINA_MIN_DISK_GB": "0",
    }


def run(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env={**env, **extra}, capture_output=True, text=True, timeout=60, check=False
    )


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env["FAKE_LOG"])
    return [line.split(" @ ")[0] for line in path.read_text().splitlines()] if path.exists() else []


def test_full_install_order_and_tag_scheme(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    done = run(env, "--workspace", str(ws), "--lean-version", "v4.21.0", "--save-config")
    assert done.returncode == 0, done.stderr
    got = calls(env)
    assert got.pop(0) == "git ls-remote --tags --refs https://github.com/leanprover-community/repl"
    assert got[0].startswith("curl -sSfL https://raw.githubusercontent.com/leanprover/elan/master/elan-init.sh -o ")
    community = "https://github.com/leanprover-community"
    assert got[1:] == [
        "elan-init -y --default-toolchain none",
        "elan toolchain install leanprover/lean4:v4.21.0",
        f"git clone --depth 1 --branch v4.21.0 {community}/repl {ws}/repl.partial",
        "lake build",
        f"git clone --depth 1 --branch v4.21.0 {community}/mathlib4 {ws}/mathlib4.partial",
        "lake exe cache get",
        f"git clone --depth 1 --branch v4.21.0 https://github.com/KellyJDavis/ast_export {ws}/ast_export.partial",
        "lake exe cache get",  # it requires Mathlib: prebuilt .oleans, not a Mathlib build
        "lake build",
    ]
    assert (ws / "repl" / "TAG").read_text().strip() == (ws / "mathlib4" / "TAG").read_text().strip() == "v4.21.0"
    assert (ws / ".kimina" / "complete").exists()
    config = Path(env["HOME"]) / ".config" / "kimina-grpc" / "config.env"
    assert f"LEAN_SERVER_WORKSPACE={ws}" in config.read_text()


def test_second_run_does_nothing(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run(env, "--workspace", str(ws)).returncode == 0
    first = len(calls(env))
    again = run(env, "--workspace", str(ws))
    assert again.returncode == 0 and len(calls(env)) == first
    assert again.stdout.count("already done") == 6


def test_resumes_after_a_failure_in_the_middle(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    failed = run(env, "--workspace", str(ws), FAKE_FAIL_CLONE="mathlib4")
    assert failed.returncode != 0
    assert not (ws / ".kimina" / "complete").exists() and not (ws / "mathlib4").exists()
    assert (ws / ".kimina" / "repl.done").exists()
    before = len(calls(env))
    resumed = run(env, "--workspace", str(ws))
    assert resumed.returncode == 0, resumed.stderr
    new = calls(env)[before:]
    assert not any("repl" in c and "clone" in c for c in new) and any("mathlib4" in c for c in new)
    assert (ws / ".kimina" / "complete").exists()


def test_cache_failure_falls_back_to_a_build(env: dict[str, str], tmp_path: Path) -> None:
    assert run(env, "--workspace", str(tmp_path / "ws"), FAKE_CACHE_FAILS="1").returncode == 0
    got = calls(env)
    caches = [i for i, c in enumerate(got) if c == "lake exe cache get"]
    assert len(caches) == 2  # Mathlib's, then ast_export's: each failure is followed by a build
    assert all(got[i + 1] == "lake build" for i in caches)
    assert (tmp_path / "ws" / ".kimina" / "complete").exists()


def test_missing_prerequisite_fails_clearly(env: dict[str, str], tmp_path: Path) -> None:
    (Path(env["FAKE_BIN"]) / "curl").unlink()
    system = tmp_path / "system"  # the system's tools, less curl
    system.mkdir()
    for folder in ("/usr/bin", "/bin"):
        for name in os.listdir(folder):
            if name != "curl" and not (system / name).exists():
                (system / name).symlink_to(Path(folder) / name)
    env = {**env, "PATH": f"{env['FAKE_BIN']}:{system}"}
    done = run(env, "--workspace", str(tmp_path / "ws"))
    assert done.returncode != 0 and "missing prerequisite(s): curl" in done.stderr
    assert calls(env) == []


def test_disk_space_is_checked(env: dict[str, str], tmp_path: Path) -> None:
    done = run(env, "--workspace", str(tmp_path / "ws"), KIMINA_MIN_DISK_GB="100000000")
    assert done.returncode != 0 and "GB free" in done.stderr


def test_dry_run_prints_the_plan_and_runs_nothing(env: dict[str, str], tmp_path: Path) -> None:
    done = run(env, "--workspace", str(tmp_path / "ws"), "--lean-version", "v4.20.1", "--dry-run")
    assert done.returncode == 0 and calls(env) == []
    lines = done.stdout.splitlines()
    assert lines[0] == f"plan: Lean v4.20.1 into {tmp_path / 'ws'}"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "[todo] prerequisites",
        "[todo] versions",
        "[todo] elan",
        "[todo] toolchain",
        "[todo] repl",
        "[todo] mathlib",
        "[todo] ast_export",
    ]
    assert "--branch v4.20.1" in done.stdout and "leanprover/lean4:v4.20.1" in done.stdout


def test_bad_version_and_mixed_versions_are_refused(env: dict[str, str], tmp_path: Path) -> None:
    assert "must look like" in run(env, "--lean-version", "4.19").stderr
    ws = tmp_path / "ws"
    assert run(env, "--workspace", str(ws), "--lean-version", "v4.19.0").returncode == 0
    other = run(env, "--workspace", str(ws), "--lean-version", "v4.21.0")
    assert other.returncode != 0 and "holds Lean v4.19.0" in other.stderr


def test_server_finds_what_the_installer_wrote(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run(env, "--workspace", str(ws), "--save-config").returncode == 0
    config = Path(env["HOME"]) / ".config" / "kimina-grpc" / "config.env"
    from kimina_grpc.settings import Settings

    settings = Settings(_env_file=config)  # type: ignore[call-arg]
    argv, cwd = settings.repl_argv()
    assert argv == ("lake", "env", str(ws / "repl/.lake/build/bin/repl")) and cwd == str(ws / "mathlib4")
    assert settings.ast_argv()[1] == ws / "ast_export"


def test_setup_command_wraps_the_installer(env: dict[str, str], tmp_path: Path) -> None:
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "kimina_grpc.cli", "setup", "--workspace", str(tmp_path / "w"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith(f"plan: Lean v4.19.0 into {tmp_path / 'w'}")


def test_no_network_fails_in_one_line_before_downloading(env: dict[str, str], tmp_path: Path) -> None:
    done = run(env, "--workspace", str(tmp_path / "ws"), FAKE_OFFLINE="1")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "install_lean: cannot reach https://github.com/leanprover-community/repl (no network?); "
        "to try the API without Lean: make demo"
    ]
    assert calls(env) == ["git ls-remote --tags --refs https://github.com/leanprover-community/repl"]


@pytest.mark.parametrize(
    ("version", "nearest"),
    [("v4.20.0", "nearest: v4.19.0 v4.20.1"), ("v4.12.0", "nearest: v4.10.0 v4.14.0"), ("v4.99.0", "nearest: v4.21.0")],
)
def test_a_version_without_a_repl_tag_names_the_nearest(
    env: dict[str, str], tmp_path: Path, version: str, nearest: str
) -> None:
    done = run(env, "--workspace", str(tmp_path / "ws"), "--lean-version", version)
    assert done.returncode != 0
    assert f"the REPL has no tag {version}; {nearest}" in done.stderr
    assert not any(c.startswith(("curl", "git clone")) for c in calls(env))


@pytest.mark.parametrize("version", ["v4.9.0", "v4.3.0"])
def test_repl_tags_that_never_flush_are_refused(env: dict[str, str], tmp_path: Path, version: str) -> None:
    done = run(env, "--workspace", str(tmp_path / "ws"), "--lean-version", version)
    assert done.returncode != 0 and "never flush stdout" in done.stderr
    assert not any(c.startswith(("curl", "git clone")) for c in calls(env))


def test_serve_without_a_workspace_installs_first_and_fails_in_one_line_offline(
    env: dict[str, str], tmp_path: Path
) -> None:
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "kimina_grpc.cli", "serve"],
        env={
            **env,
            "FAKE_OFFLINE": "1",
            "LEAN_SERVER_CONFIG_FILE": str(tmp_path / "none.env"),
            "LEAN_SERVER_AUTH": "off",  # a server without a key or this stops before installing
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "kimina-grpc: no Lean workspace found; installing one (tools/install_lean.sh)"
    assert lines[1].startswith("install_lean: cannot reach https://github.com/leanprover-community/repl")
    assert lines[2].endswith("to try the API without Lean: kimina-grpc demo") and len(lines) == 3
    assert "Traceback" not in done.stderr


def test_serve_never_reinstalls_an_existing_workspace(env: dict[str, str], tmp_path: Path) -> None:
    import sys

    ws = tmp_path / "ws"
    (ws / "repl").mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "kimina_grpc.cli", "serve", "--port", "-1"],
        env={**env, "LEAN_SERVER_WORKSPACE": str(ws), "LEAN_SERVER_CONFIG_FILE": str(tmp_path / "none.env")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # The bad port stops it before serving; what matters is that no installer step ran.
    assert done.returncode == 2 and "LEAN_SERVER_PORT" in done.stderr
    assert calls(env) == []
