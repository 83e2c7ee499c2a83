"""The CLI's own edges: --version, one-line hints for a missing extra, an unreachable server."""

from __future__ import annotations

import re
import sys

import pytest

from kimina_grpc import cli
from kimina_grpc.extras import install_command


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
    assert err == [f"kimina-grpc: this command needs the {extra} extra ({module} is missing): {install_command(extra)}"]


def test_health_of_nothing_listening_says_it_cannot_connect(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["health", "--target", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "kimina-grpc: no server at 127.0.0.1:1 (connection refused): "
        "start one with `kimina-grpc serve` or `kimina-grpc demo`"
    ]


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "name a command" in capsys.readouterr().err


def test_the_installer_ships_inside_the_package() -> None:
    script = cli.installer_path()
    assert script.is_file() and script.read_text().startswith("#!/usr/bin/env bash")


def test_client_only_helpers_name_the_extra_they_need(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from kimina_grpc.client import KiminaClient, results_to_dataset

    monkeypatch.setitem(sys.modules, "datasets", None)  # as in a client-only install
    wanted = re.escape(f"needs the bench extra (datasets is missing): {install_command('bench')}")
    with pytest.raises(ModuleNotFoundError, match=f"results_to_dataset {wanted}"):
        results_to_dataset([])
    with KiminaClient("127.0.0.1:1") as client, pytest.raises(ModuleNotFoundError, match=f"run_benchmark {wanted}"):
        client.run_benchmark("proofs.jsonl")
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy, sys; sys.modules['psutil'] = None; sys.argv = ['fake_repl', '--help'];"
            " runpy.run_module('kimina_grpc.testing.fake_repl', run_name='__main__')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # The stand-in REPL takes nothing from the server (issue 31: its own header rule and syscall
    # numbers), so it runs in a client-only install too.
    assert run.returncode == 0, run.stderr
    assert "--table" in run.stdout


def test_the_package_has_a_version() -> None:
    import kimina_grpc

    assert kimina_grpc.__version__.startswith("0.")
    assert cli._version(False) == f"kimina-grpc {kimina_grpc.__version__}"
