"""Settings: the seed's variables, sizes, and start-up failing clearly on a bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kimina_grpc.settings import Settings, parse_size


def test_sizes_and_init_repls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEAN_SERVER_MAX_REPL_MEM", "12G")
    monkeypatch.setenv("LEAN_SERVER_INIT_REPLS", '{"import Mathlib": 2}')
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.max_repl_mem == 12 << 30 and s.init_repls == {"import Mathlib": 2}
    assert s.port == 50051 and s.max_repls >= 1
    assert parse_size("512M") == 512 << 20 and parse_size("1.5K") == 1536


def test_repl_command_replaces_lake(tmp_path: Path) -> None:
    s = Settings(_env_file=None, repl_command="python -m x --flag 'a b'", project_dir=tmp_path)  # type: ignore[call-arg]
    assert s.repl_argv() == (("python", "-m", "x", "--flag", "a b"), str(tmp_path))
    real = Settings(_env_file=None, workspace=tmp_path)  # type: ignore[call-arg]
    argv, cwd = real.repl_argv()
    assert argv == ("lake", "env", str(tmp_path / "repl/.lake/build/bin/repl"))
    assert cwd == str(tmp_path / "mathlib4")


def test_workspace_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert Settings(_env_file=None).resolved_workspace() is None  # type: ignore[call-arg]
    (tmp_path / "lean-workspace" / "repl").mkdir(parents=True)
    assert Settings(_env_file=None).resolved_workspace() == tmp_path / "lean-workspace"  # type: ignore[call-arg]
    (tmp_path / "kimina-workspace" / "mathlib4").mkdir(parents=True)
    assert Settings(_env_file=None).resolved_workspace() == tmp_path / "kimina-workspace"  # type: ignore[call-arg]
    (tmp_path / "repl").mkdir()
    assert Settings(_env_file=None).resolved_workspace() == tmp_path  # type: ignore[call-arg]


def test_bad_value_stops_start_up_naming_the_variable() -> None:
    env = {**os.environ, "LEAN_SERVER_MAX_REPL_MEM": "12X", "LEAN_SERVER_REPL_COMMAND": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "kimina_grpc.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "LEAN_SERVER_MAX_REPL_MEM" in done.stderr and "12X" in done.stderr


def test_a_blank_api_key_is_no_key() -> None:
    with pytest.raises(ValueError, match="no API key"):
        Settings(_env_file=None, api_key="  \n", auth="on").resolved_api_key()  # type: ignore[call-arg]
    assert Settings(_env_file=None, api_key=" ", auth="off").resolved_api_key() is None  # type: ignore[call-arg]
    assert Settings(_env_file=None, api_key=" k\n", auth="on").resolved_api_key() == "k"  # type: ignore[call-arg]


def _imports_after(code: str) -> set[str]:
    """The kimina_grpc and pydantic modules a fresh interpreter holds after running `code`."""
    probe = (
        f"{code}\nimport sys\nprint(' '.join(m for m in sys.modules if m.split('.')[0] in ('kimina_grpc', 'pydantic')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return set(done.stdout.split())


def test_the_settings_check_the_database_url_without_importing_the_proof_log(tmp_path: Path) -> None:
    """The settings are the ground floor: checking LEAN_SERVER_DATABASE_URL must not reach up into the proof
    log (kimina_grpc/prooflog/ imports the settings); a bad URL is still refused."""
    code = (
        "from kimina_grpc.settings import Settings\n"
        f"Settings(_env_file=None, database_url={f'sqlite:///{tmp_path}/log.db'!r})"
    )
    loaded = _imports_after(code)
    assert "kimina_grpc.settings" in loaded
    assert not {m for m in loaded if m.startswith("kimina_grpc.prooflog")}
    with pytest.raises(ValueError, match="LEAN_SERVER_DATABASE_URL: 'mysql://db' is neither"):
        Settings(_env_file=None, database_url="mysql://db")  # type: ignore[call-arg]


def test_the_database_url_grammar_needs_only_the_standard_library() -> None:
    """`kimina_grpc.prooflog.load` and `kimina-grpc log export` run with the `log` extra, without pydantic."""
    loaded = _imports_after("import kimina_grpc.database_url")
    assert "kimina_grpc.database_url" in loaded
    assert not {m for m in loaded if m.startswith(("pydantic", "kimina_grpc.settings"))}
