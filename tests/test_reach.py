"""A server that is not there is said at once, in words a user acts on, before any work starts; an
address without a port means the server's port (50051), not gRPC's 443."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kimina_grpc import cli
from kimina_grpc.client import KiminaClient, reach
from kimina_grpc.testing import free_port, serve_process

HINT = "start one with `kimina-grpc serve` or `kimina-grpc demo`"


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    with serve_process({"LEAN_SERVER_MAX_REPLS": "1"}) as (_, port):
        yield port


def test_check_bench_and_health_say_no_server_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    proof = tmp_path / "p.lean"
    proof.write_text("theorem t : True := trivial\n")
    dataset = tmp_path / "d.jsonl"
    dataset.write_text('{"id": "a", "code": "theorem t : True := trivial"}\n')
    said = f"no server at localhost:{port} (connection refused): {HINT}"
    assert cli.main(["check", str(proof), "--target", f"localhost:{port}"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"kimina-grpc: {said}"]
    assert cli.main(["health", "--target", f"localhost:{port}"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"kimina-grpc: {said}"]
    out = tmp_path / "report"
    assert cli.main(["bench", "--dataset", str(dataset), "--target", f"localhost:{port}", "--output", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"kimina-grpc bench: {said}"]  # no progress bar was drawn
    assert not out.exists()


def test_an_unknown_host_is_said_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proof = tmp_path / "p.lean"
    proof.write_text("theorem t : True := trivial\n")
    assert cli.main(["check", str(proof), "--target", "nosuch.invalid:50051"]) == 2
    assert capsys.readouterr().err.strip() == f"kimina-grpc: no server at nosuch.invalid:50051 (unknown host): {HINT}"


def test_an_address_without_a_port_dials_the_servers_port(
    server_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(reach, "DEFAULT_PORT", server_port)  # 50051 itself may be taken on a shared machine
    with KiminaClient("127.0.0.1") as client:
        assert client.health_status("liveness") == "SERVING"
    proof = tmp_path / "p.lean"
    proof.write_text("theorem t : True := trivial\n")
    assert cli.main(["check", str(proof), "--target", "127.0.0.1"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{proof}: VALID")


@pytest.mark.parametrize(
    ("typed", "dialled"),
    [
        ("localhost", "localhost:50051"),
        ("localhost:7", "localhost:7"),
        ("[::1]", "[::1]:50051"),
        ("::1", "[::1]:50051"),
        ("[::1]:7", "[::1]:7"),
        ("dns:///lean.svc", "dns:///lean.svc"),
        ("unix:/run/kimina.sock", "unix:/run/kimina.sock"),
    ],
)
def test_default_port_rules(typed: str, dialled: str) -> None:
    assert reach.with_default_port(typed) == dialled


def test_behind_a_proxy_the_look_is_left_to_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    assert reach.unreachable(f"127.0.0.1:{port}") is not None
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")  # gRPC dials through it, not directly
    assert reach.unreachable(f"127.0.0.1:{port}") is None
