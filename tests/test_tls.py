"""TLS and mutual TLS with certificates made here; the API key from a file; refusing to serve without
auth unless it is explicitly off; the plaintext health-only port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kimina_grpc.client import AsyncKiminaClient, KiminaError, Unauthenticated, Verdict
from kimina_grpc.service.server import create_app
from kimina_grpc.testing import fake_repl_command, serve_process

from .helpers.server import settings
from .helpers.tls import Pki

PROOF = "theorem t : True := trivial"


async def test_tls_client_connects_and_a_client_without_the_ca_is_refused(pki: Pki) -> None:
    app = create_app(settings(tls_cert=pki.server_cert, tls_key=pki.server_key, health_port=0))
    await app.start()
    target = f"127.0.0.1:{app.port}"
    try:
        async with AsyncKiminaClient(target, tls=True, ca=pki.ca, max_attempts=1) as client:
            assert (await client.verify(PROOF))[0].verdict is Verdict.VALID
            assert await client.health_status("liveness") == "SERVING"
            info = await client.server_info()
            assert info.tls and not info.tls_client_auth
        for bad in (
            AsyncKiminaClient(target, tls=True, ca=pki.other_ca, max_attempts=1),  # does not trust the server
            AsyncKiminaClient(target, max_attempts=1),  # plaintext against TLS
        ):
            async with bad:
                with pytest.raises(KiminaError, match="UNAVAILABLE"):
                    await bad.verify(PROOF)
        # The kubelet's gRPC probe speaks no TLS: the health-only port answers in plaintext, and only health.
        assert app.health_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.health_port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="liveness"))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        async with AsyncKiminaClient(f"127.0.0.1:{app.health_port}", max_attempts=1) as plain:
            with pytest.raises(KiminaError, match="UNIMPLEMENTED"):
                await plain.verify(PROOF)
    finally:
        await app.stop()


async def test_mutual_tls_requires_a_client_certificate(pki: Pki) -> None:
    app = create_app(settings(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca))
    await app.start()
    target = f"127.0.0.1:{app.port}"
    try:
        async with AsyncKiminaClient(
            target, ca=pki.ca, cert=pki.client_cert, key=pki.client_key.read_bytes(), max_attempts=1
        ) as client:
            assert (await client.verify(PROOF))[0].verdict is Verdict.VALID
            assert (await client.server_info()).tls_client_auth
        async with AsyncKiminaClient(target, tls=True, ca=pki.ca, max_attempts=1) as anonymous:
            with pytest.raises(KiminaError, match="UNAVAILABLE"):
                await anonymous.verify(PROOF)
            assert not await anonymous.health()
    finally:
        await app.stop()


def test_cli_check_and_health_over_mutual_tls(pki: Pki, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    env = {
        "LEAN_SERVER_TLS_CERT": str(pki.server_cert),
        "LEAN_SERVER_TLS_KEY": str(pki.server_key),
        "LEAN_SERVER_TLS_CLIENT_CA": str(pki.ca),
        "LEAN_SERVER_API_KEY_FILE": str(key_file),
    }
    (tmp_path / "ok.lean").write_text(PROOF)
    with serve_process(env) as (_, port):
        tls = ["--ca", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key)]
        target = ["--target", f"127.0.0.1:{port}"]

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "kimina_grpc.cli", *args],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        done = cli("check", str(tmp_path / "ok.lean"), *target, *tls, "--api-key", "s3cret")
        assert done.returncode == 0 and "VALID" in done.stdout, done.stderr
        done = cli("check", str(tmp_path / "ok.lean"), *target, *tls, "--api-key", "wrong")
        assert done.returncode == 2 and "UNAUTHENTICATED" in done.stderr
        done = cli("health", *target, "--service", "liveness", *tls)
        assert done.returncode == 0 and done.stdout.strip() == "SERVING"
        done = cli("health", *target, "--service", "liveness", "--tls", "--ca", str(pki.ca))  # no client cert
        assert done.returncode != 0


async def test_the_api_key_comes_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("from-a-file\n")  # as a Kubernetes Secret is mounted: a trailing newline is not the key
    app = create_app(settings(api_key_file=key_file))
    await app.start()
    try:
        async with AsyncKiminaClient(f"127.0.0.1:{app.port}", "from-a-file", max_attempts=1) as client:
            assert (await client.verify(PROOF))[0].verdict is Verdict.VALID
            info = await client.server_info()
            assert info.auth_required and not any("authentication" in w for w in info.security_warnings)
        async with AsyncKiminaClient(f"127.0.0.1:{app.port}", "from-a-fil", max_attempts=1) as client:
            with pytest.raises(Unauthenticated):
                await client.verify(PROOF)
    finally:
        await app.stop()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"auth": "on"}, "no API key"),
        ({"auth": "on", "api_key": ""}, "no API key"),
        ({"auth": "on", "api_key_file": "EMPTY"}, "is empty"),
        ({"auth": "on", "api_key_file": "MISSING"}, "cannot read"),
        ({"auth": "on", "api_key": "a", "api_key_file": "KEY"}, "not both"),
        ({"auth": "off", "api_key": "a"}, "AUTH=off but an API key is set"),
    ],
)
def test_auth_set_ups_that_are_refused(kw: dict[str, str], message: str, tmp_path: Path) -> None:
    (tmp_path / "EMPTY").write_text("\n")
    (tmp_path / "KEY").write_text("k")
    if "api_key_file" in kw:
        kw = {**kw, "api_key_file": str(tmp_path / kw["api_key_file"])}
    with pytest.raises(ValueError, match=message):
        settings(**kw).resolved_api_key()


def test_serve_without_a_key_refuses_to_start_and_says_how() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAN_SERVER_")} | {
        "LEAN_SERVER_REPL_COMMAND": fake_repl_command(),
        "LEAN_SERVER_CONFIG_FILE": os.devnull,
    }
    done = subprocess.run(
        [sys.executable, "-m", "kimina_grpc.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "no API key: set LEAN_SERVER_API_KEY_FILE" in done.stderr and "LEAN_SERVER_AUTH=off" in done.stderr
