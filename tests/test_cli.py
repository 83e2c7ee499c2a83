"""The CLI's own edges: --version, one-line hints for a missing extra, an unreachable server."""

from __future__ import annotations

import sys

import pytest

from kimina_grpc import cli


def test_version_and_contract(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("kimina-grpc 0.")
    assert cli.main(["--version", "-v"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "contract: kimina_grpc.v1"


@pytest.mark.parametrize(("command", "extra", "module"), [("bench", "bench", "tqdm"), ("serve", "server", "pydantic")])
def test_a_missing_extra_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str, extra: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    assert cli.main([command]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"kimina-grpc: this command needs the {extra} extra ({module} is missing): pip install 'kimina_grpc[{extra}]'"
    ]


def test_health_of_nothing_listening_says_it_cannot_connect(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["health", "--target", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kimina-grpc: cannot reach 127.0.0.1:1: UNAVAILABLE")


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "name a command" in capsys.readouterr().err


def test_the_installer_ships_inside_the_package() -> None:
    script = cli.installer_path()
    assert script.is_file() and script.read_text().startswith("#!/usr/bin/env bash")
