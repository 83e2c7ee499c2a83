"""tools/install_lean.sh with stand-ins for curl, git, elan and lake on PATH, recording their calls.

The stand-ins are as strict as the real tools where the installer depends on it: `elan toolchain
install` fails for a toolchain already installed (elan's `Toolchain::install`), each clone carries the
`lean-toolchain` of its tag, and the REPL's tags are the real ones.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import eventually_sync
from .helpers.install import REAL_REPL_TAGS, calls
from .helpers.paths import ROOT

SCRIPT = ROOT / "tools" / "install_lean.sh"
COMMUNITY = "https://github.com/leanprover-community"
REPL = f"{COMMUNITY}/repl"


def run(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env={**env, **extra}, capture_output=True, text=True, timeout=60, check=False
    )


def cli(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kimina_grpc.cli", *args],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


OFFLINE = (
    f"install_lean: cannot reach {REPL} (Could not resolve host: github.com);"
    " to try the API without Lean: kimina-grpc demo"
)


def downloads(env: dict[str, str]) -> list[str]:
    return [c for c in calls(env) if c.startswith(("curl", "git clone", "elan toolchain install"))]


def ls_remote(url: str) -> str:
    return f"git ls-remote --refs {url} refs/tags/v* refs/heads/v*"


def test_full_install_order_and_tag_scheme(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    done = run(env, "--workspace", str(ws), "--lean-version", "v4.21.0", "--save-config")
    assert done.returncode == 0, done.stderr
    got = calls(env)
    assert got[:3] == [
        ls_remote(REPL),
        ls_remote(f"{COMMUNITY}/mathlib4"),
        ls_remote("https://github.com/KellyJDavis/ast_export"),
    ]
    assert got[3].startswith(
        "curl -sSfL --retry 3 https://raw.githubusercontent.com/leanprover/elan/master/elan-init.sh"
    )
    assert got[4:] == [
        "elan-init -y --default-toolchain none",
        "elan toolchain list",
        "elan toolchain install leanprover/lean4:v4.21.0",
        f"git clone --depth 1 --branch v4.21.0 {REPL} {ws}/repl.partial",
        "lake build",
        f"git clone --depth 1 --branch v4.21.0 {COMMUNITY}/mathlib4 {ws}/mathlib4.partial",
        "lake exe cache get",
        "lake build Mathlib",  # checks the cache, builds what it lacked (the REPL's own Mathlib tests)
        f"git clone --depth 1 --branch v4.21.0 https://github.com/KellyJDavis/ast_export {ws}/ast_export.partial",
        "lake exe cache get",  # it requires Mathlib: prebuilt .oleans, not a Mathlib build
        "lake build",
    ]
    for source in ("repl", "mathlib4", "ast_export"):
        assert (ws / source / "lean-toolchain").read_text().strip() == "leanprover/lean4:v4.21.0"
    assert (ws / ".kimina" / "complete").read_text().strip() == "v4.21.0"
    assert not list(ws.glob("*.partial")) and not (ws / ".kimina" / "elan-init.sh").exists()
    config = Path(env["HOME"]) / ".config" / "kimina-grpc" / "config.env"
    assert f"LEAN_SERVER_WORKSPACE={ws}" in config.read_text()


def test_second_run_does_nothing(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run(env, "--workspace", str(ws)).returncode == 0
    first = len(calls(env))
    again = run(env, "--workspace", str(ws), FAKE_OFFLINE="1")  # a complete workspace needs no network
    assert again.returncode == 0 and len(calls(env)) == first
    assert again.stdout.count("already done") == 7


def test_resumes_after_a_failure_in_the_middle(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    failed = run(env, "--workspace", str(ws), FAKE_FAIL_CLONE="mathlib4")
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == (
        "install_lean: step mathlib failed (exit 128, see above); run the same command again to resume there"
    )
    assert not (ws / ".kimina" / "complete").exists() and not (ws / "mathlib4").exists()
    assert (ws / ".kimina" / "repl.done").exists()
    before = len(calls(env))
    resumed = run(env, "--workspace", str(ws))
    assert resumed.returncode == 0, resumed.stderr
    new = calls(env)[before:]
    assert not any("repl" in c and "clone" in c for c in new) and any("mathlib4" in c for c in new)
    assert (ws / ".kimina" / "complete").exists()


def test_a_failed_build_resumes_without_cloning_again(env: dict[str, str], tmp_path: Path) -> None:
    """Mathlib's clone (and the packages and cache Lake put in it) survives a build that failed."""
    ws = tmp_path / "ws"
    failed = run(env, "--workspace", str(ws), FAKE_FAIL_BUILD="mathlib4", FAKE_CACHE_FAILS="1")
    assert failed.returncode != 0
    (ws / "mathlib4" / ".lake").mkdir()  # what Lake fetched and built before the failure
    before = len(calls(env))
    assert run(env, "--workspace", str(ws)).returncode == 0
    new = calls(env)[before:]
    assert not any(c.startswith("git clone") and "mathlib4" in c for c in new)
    assert (ws / "mathlib4" / ".lake").is_dir()
    assert new[new.index("lake exe cache get") + 1] == "lake build Mathlib"
    assert failed.returncode == 1 and "step mathlib failed" in failed.stderr


def interrupt(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run argv with a build that hangs in mathlib4, and press Ctrl-C there (SIGINT to the group)."""
    proc = subprocess.Popen(
        argv,
        env={**env, "FAKE_SLEEP_BUILD": "mathlib4"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    flag = Path(env["FAKE_LOG"] + ".sleeping")
    eventually_sync(lambda: flag.exists() or proc.poll() is not None, what="the installer in its sleeping step")
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    flag.unlink(missing_ok=True)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_an_interrupted_install_says_where_it_resumes(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    stopped = interrupt(["bash", str(SCRIPT), "--workspace", str(ws)], env)
    assert stopped.stderr.strip().splitlines()[-1] == (
        "install_lean: step mathlib was interrupted; run the same command again to resume there"
    )
    assert stopped.returncode == 130 and not (ws / ".kimina" / "mathlib.done").exists()
    assert run(env, "--workspace", str(ws)).returncode == 0


def test_an_interrupted_setup_ends_in_one_line_without_a_traceback(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    stopped = interrupt([sys.executable, "-m", "kimina_grpc.cli", "setup", "--workspace", str(ws)], env)
    assert "Traceback" not in stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1] == "kimina-grpc: setup interrupted; run it again to resume"
    assert stopped.returncode == 130
    assert cli(env, "setup", "--workspace", str(ws)).returncode == 0


def test_cache_failure_falls_back_to_a_build(env: dict[str, str], tmp_path: Path) -> None:
    done = run(env, "--workspace", str(tmp_path / "ws"), FAKE_CACHE_FAILS="1")
    assert done.returncode == 0
    got = calls(env)
    caches = [i for i, c in enumerate(got) if c == "lake exe cache get"]
    assert len(caches) == 2  # Mathlib's, then ast_export's: each failure is followed by a build
    assert [got[i + 1] for i in caches] == ["lake build Mathlib", "lake build"]
    assert done.stderr.count("lake build compiles Mathlib (hours)") == 2
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
    assert done.returncode == 2 and "missing prerequisite(s): curl" in done.stderr
    assert calls(env) == [] and not (tmp_path / "ws").exists()


def test_disk_space_is_checked(env: dict[str, str], tmp_path: Path) -> None:
    done = run(env, "--workspace", str(tmp_path / "new" / "ws"), KIMINA_MIN_DISK_GB="100000000")
    assert done.returncode == 2 and "GB free" in done.stderr
    assert calls(env) == [] and not (tmp_path / "new").exists()


def test_a_resume_is_not_refused_for_the_space_mathlib_already_uses(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run(env, "--workspace", str(ws), FAKE_FAIL_CLONE="ast_export").returncode != 0
    resumed = run(env, "--workspace", str(ws), KIMINA_MIN_DISK_GB="100000000")
    assert resumed.returncode == 0, resumed.stderr


def test_dry_run_prints_the_plan_and_changes_nothing(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "new" / "ws"
    done = run(env, "--workspace", str(ws), "--dry-run", LEAN_SERVER_LEAN_VERSION="v4.21.0")
    assert done.returncode == 0 and calls(env) == []
    assert not (tmp_path / "new").exists()
    lines = done.stdout.splitlines()
    assert lines[0] == f"plan: Lean v4.21.0 into {ws}"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "[todo] prerequisites",
        "[todo] versions",
        "[todo] elan",
        "[todo] toolchain",
        "[todo] repl",
        "[todo] mathlib",
        "[todo] ast_export",
    ]
    assert "--branch v4.21.0" in done.stdout and "leanprover/lean4:v4.21.0" in done.stdout


def test_dry_run_of_a_complete_workspace(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run(env, "--workspace", str(ws)).returncode == 0
    plan = run(env, "--workspace", str(ws), "--dry-run").stdout.splitlines()[1:]
    assert all(line.startswith("  [done]") for line in plan) and len(plan) == 7


@pytest.mark.parametrize(
    "version", ["4.19", "v4.19", "4.19.0", "v4.19.0x", "v4.19.0-rc", "v4.19.0-beta1", "v4.19.0;ls"]
)
def test_a_malformed_version_is_a_usage_mistake(env: dict[str, str], tmp_path: Path, version: str) -> None:
    done = run(env, "--workspace", str(tmp_path / "ws"), "--lean-version", version)
    assert done.stderr.strip().splitlines() == [
        f"install_lean: --lean-version must be vX.Y.Z (e.g. v4.19.0) or a release candidate vX.Y.Z-rcN, not '{version}'"
    ]
    assert done.returncode == 2 and calls(env) == [] and not (tmp_path / "ws").exists()


def test_a_malformed_version_from_the_environment_names_the_variable(env: dict[str, str]) -> None:
    done = run(env, "--dry-run", LEAN_SERVER_LEAN_VERSION="4.19")
    assert done.returncode == 2 and done.stderr.startswith("install_lean: LEAN_SERVER_LEAN_VERSION must be vX.Y.Z")


def test_help_is_the_header(env: dict[str, str]) -> None:
    done = run(env, "--help")
    assert done.returncode == 0 and "Exit status: 0 done; 2 refused" in done.stdout
    assert "set -euo" not in done.stdout and calls(env) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--frobnicate"], "unknown argument: --frobnicate"), (["--lean-version"], "--lean-version needs a value")],
)
def test_bad_arguments_are_usage_mistakes(env: dict[str, str], args: list[str], message: str) -> None:
    done = run(env, *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_mixed_versions_are_refused(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run(env, "--workspace", str(ws), "--lean-version", "v4.19.0").returncode == 0
    for args in ([], ["--dry-run"]):
        other = run(env, "--workspace", str(ws), "--lean-version", "v4.21.0", *args)
        assert "holds Lean v4.19.0 (repl); use another --workspace" in other.stderr and other.returncode == 2
    assert (ws / ".kimina" / "complete").read_text().strip() == "v4.19.0"


def test_following_the_suggested_version_works_in_the_same_workspace(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    refused = run(env, "--workspace", str(ws), "--lean-version", "v4.20.0")
    assert "the REPL has no tag v4.20.0; nearest: v4.19.0 v4.21.0" in refused.stderr
    follow = run(env, "--workspace", str(ws), "--lean-version", "v4.19.0")
    assert follow.returncode == 0, follow.stderr
    assert refused.returncode == 2


def test_a_workspace_left_by_the_old_installer_is_not_blocked(env: dict[str, str], tmp_path: Path) -> None:
    """The old installer wrote .kimina/version before checking the tag: that leftover binds nothing."""
    ws = tmp_path / "ws"
    (ws / ".kimina").mkdir(parents=True)
    (ws / ".kimina" / "version").write_text("v4.20.0\n")
    (ws / ".kimina" / "prerequisites.done").touch()
    assert run(env, "--workspace", str(ws), "--lean-version", "v4.19.0").returncode == 0


@pytest.mark.parametrize(
    ("version", "nearest"),
    [
        ("v4.20.0", "nearest: v4.19.0 v4.21.0"),
        ("v4.12.0", "nearest: v4.10.0 v4.14.0"),  # releases for a release: not v4.11.0-rc1
        ("v4.23.0", "nearest: v4.22.0 v4.24.0"),
        ("v4.99.0", "nearest: v4.32.0"),
        ("v4.19.0-rc1", "nearest: v4.18.0 v4.19.0-rc2"),  # a release candidate comes before its release
        ("v4.33.0-rc3", "nearest: v4.33.0-rc2"),
    ],
)
def test_a_version_without_a_repl_tag_names_the_nearest(
    env: dict[str, str], tmp_path: Path, version: str, nearest: str
) -> None:
    done = run(env, "--workspace", str(tmp_path / "ws"), "--lean-version", version)
    assert f"the REPL has no tag {version}; {nearest} (pass one with --lean-version)" in done.stderr
    assert done.returncode == 2 and downloads(env) == [] and not (tmp_path / "ws").exists()


VERSION = re.compile(r"v\d+\.\d+\.\d+(?:-rc\d+)?")


@pytest.mark.parametrize(
    "version", ["v4.9.1", "v4.9.0-rc2", "v4.10.1", "v4.11.0", "v4.13.0", "v4.20.0", "v4.23.0", "v4.99.0", "v4.10.0-rc2"]
)
def test_every_version_a_refusal_names_can_be_installed(env: dict[str, str], tmp_path: Path, version: str) -> None:
    refused = run(env, "--workspace", str(tmp_path / "ws"), "--lean-version", version)
    assert refused.returncode != 0
    named = set(VERSION.findall(refused.stderr.strip().splitlines()[-1])) - {version}
    assert named
    for other in sorted(named):
        done = run(env, "--workspace", str(tmp_path / other), "--lean-version", other)
        assert done.returncode == 0, f"{version} named {other}, which fails: {done.stderr}"


@pytest.mark.parametrize("version", ["v4.9.0", "v4.3.0", "v4.9.1", "v4.9.0-rc1", "v4.10.0-rc1"])
def test_repl_tags_that_never_flush_are_refused(env: dict[str, str], tmp_path: Path, version: str) -> None:
    """v4.10.0-rc1 is a real tag, but 4fc1e6d (the flush) is first in v4.10.0."""
    done = run(env, "--workspace", str(tmp_path / "ws"), "--lean-version", version)
    assert "never flush stdout" in done.stderr and "use v4.10.0 or later" in done.stderr
    assert done.returncode == 2 and calls(env) == [] and not (tmp_path / "ws").exists()


def test_release_candidates_install_end_to_end(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    done = run(env, "--workspace", str(ws), "--lean-version", "v4.19.0-rc2", "--save-config")
    assert done.returncode == 0, done.stderr
    got = calls(env)
    assert "elan toolchain install leanprover/lean4:v4.19.0-rc2" in got
    assert sum(c.startswith("git clone --depth 1 --branch v4.19.0-rc2 ") for c in got) == 3
    assert (ws / "mathlib4" / "lean-toolchain").read_text().strip() == "leanprover/lean4:v4.19.0-rc2"
    config = Path(env["HOME"]) / ".config" / "kimina-grpc" / "config.env"
    assert "LEAN_SERVER_LEAN_VERSION=v4.19.0-rc2" in config.read_text()


def test_a_version_mathlib_lacks_is_refused_before_anything_is_downloaded(env: dict[str, str], tmp_path: Path) -> None:
    without = " ".join(t for t in REAL_REPL_TAGS.split() if t != "v4.21.0")
    done = run(env, "--workspace", str(tmp_path / "ws"), "--lean-version", "v4.21.0", FAKE_TAGS_MATHLIB4=without)
    assert downloads(env) == []
    assert "Mathlib has no tag v4.21.0; nearest: v4.19.0 v4.22.0" in done.stderr and done.returncode == 2


def test_a_version_ast_export_lacks_is_refused_and_never_suggested(env: dict[str, str], tmp_path: Path) -> None:
    only = "v4.15.0 v4.19.0 v4.22.0"
    done = run(env, "--workspace", str(tmp_path / "ws"), "--lean-version", "v4.21.0", FAKE_TAGS_AST_EXPORT=only)
    assert downloads(env) == [] and done.returncode == 2
    assert "ast_export has no branch or tag v4.21.0; nearest: v4.19.0 v4.22.0" in done.stderr
    refused = run(env, "--workspace", str(tmp_path / "ws"), "--lean-version", "v4.20.0", FAKE_TAGS_AST_EXPORT=only)
    assert "the REPL has no tag v4.20.0; nearest: v4.19.0 v4.22.0" in refused.stderr  # not v4.21.0


def test_a_toolchain_already_installed_is_not_installed_again(env: dict[str, str], tmp_path: Path) -> None:
    """A second workspace at the same version: real elan fails `toolchain install` for it."""
    assert run(env, "--workspace", str(tmp_path / "a")).returncode == 0
    before = len(calls(env))
    second = run(env, "--workspace", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr
    assert not any(c.startswith(("elan toolchain install", "curl")) for c in calls(env)[before:])


def test_a_source_for_another_lean_is_refused_and_blocks_nothing(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    bad = run(env, "--workspace", str(ws), FAKE_TOOLCHAIN_REPL="leanprover/lean4:v4.18.0")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        f"install_lean: {REPL} at v4.19.0 asks for Lean 'leanprover/lean4:v4.18.0' in its lean-toolchain, "
        "not leanprover/lean4:v4.19.0; pick another --lean-version"
    )
    assert not (ws / "repl").exists() and not (ws / "repl.partial").exists()
    assert run(env, "--workspace", str(ws), "--lean-version", "v4.21.0").returncode == 0


def test_save_config_keeps_the_other_settings(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "etc" / "kimina.env"  # where LEAN_SERVER_CONFIG_FILE tells the server to look
    config.parent.mkdir()
    config.write_text("LEAN_SERVER_API_KEY_FILE=/run/key\nLEAN_SERVER_WORKSPACE=/old\nLEAN_SERVER_MAX_REPLS=3\n")
    ws = tmp_path / "ws"
    done = run(env, "--workspace", str(ws), "--save-config", LEAN_SERVER_CONFIG_FILE=str(config))
    assert done.returncode == 0, done.stderr
    lines = config.read_text().splitlines()
    assert lines[1:] == [
        "LEAN_SERVER_API_KEY_FILE=/run/key",
        "LEAN_SERVER_MAX_REPLS=3",
        f"LEAN_SERVER_WORKSPACE={ws}",
        "LEAN_SERVER_LEAN_VERSION=v4.19.0",
    ]
    assert not (Path(env["HOME"]) / ".config").exists()


def test_server_finds_what_the_installer_wrote(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run(env, "--workspace", str(ws), "--save-config").returncode == 0
    config = Path(env["HOME"]) / ".config" / "kimina-grpc" / "config.env"
    from kimina_grpc.settings import Settings

    settings = Settings(_env_file=config)  # type: ignore[call-arg]
    argv, cwd = settings.repl_argv()
    assert argv == ("lake", "env", str(ws / "repl/.lake/build/bin/repl")) and cwd == str(ws / "mathlib4")
    assert settings.ast_argv()[1] == ws / "ast_export"


def test_no_network_fails_in_one_line_before_downloading(env: dict[str, str], tmp_path: Path) -> None:
    done = run(env, "--workspace", str(tmp_path / "ws"), FAKE_OFFLINE="1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [OFFLINE]
    assert calls(env) == [ls_remote(REPL)] and not (tmp_path / "ws").exists()


def test_a_repository_that_wants_a_password_fails_without_waiting(env: dict[str, str], tmp_path: Path) -> None:
    done = run(env, "--workspace", str(tmp_path / "ws"), FAKE_NEEDS_AUTH="repl")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"install_lean: cannot reach {REPL} (could not read Username for 'https://github.com': "
        "terminal prompts disabled); to try the API without Lean: kimina-grpc demo"
    ]


def test_setup_command_wraps_the_installer(env: dict[str, str], tmp_path: Path) -> None:
    done = cli(env, "setup", "--workspace", str(tmp_path / "w"), "--dry-run")
    assert done.returncode == 0 and done.stdout.startswith(f"plan: Lean v4.19.0 into {tmp_path / 'w'}")
    assert not (tmp_path / "w").exists()


def test_setup_without_network_exits_2_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    done = cli(env, "setup", "--workspace", str(tmp_path / "w"), FAKE_OFFLINE="1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [OFFLINE]


def test_setup_with_a_malformed_version_is_a_usage_mistake(env: dict[str, str], tmp_path: Path) -> None:
    done = cli(env, "setup", "--workspace", str(tmp_path / "w"), "--lean-version", "4.19")
    assert done.returncode == 2 and "vX.Y.Z" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert calls(env) == [] and not (tmp_path / "w").exists()


def test_setup_without_bash_fails_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = cli(env, "setup", "--dry-run", PATH=str(tmp_path / "empty"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "kimina-grpc: cannot run the installer: [Errno 2] No such file or directory: 'bash'"
    ]


def test_serve_without_a_workspace_installs_first_and_fails_in_one_line_offline(
    env: dict[str, str], tmp_path: Path
) -> None:
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
    assert lines[1].startswith(f"install_lean: cannot reach {REPL}")
    assert lines[2].endswith("to try the API without Lean: kimina-grpc demo") and len(lines) == 3
    assert "Traceback" not in done.stderr


def test_serve_never_reinstalls_an_existing_workspace(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "repl").mkdir(parents=True)
    done = cli(
        env, "serve", "--port", "-1", LEAN_SERVER_WORKSPACE=str(ws), LEAN_SERVER_CONFIG_FILE=str(tmp_path / "none.env")
    )
    # The bad port stops it before serving; what matters is that no installer step ran.
    assert done.returncode == 2 and "LEAN_SERVER_PORT" in done.stderr
    assert calls(env) == []
