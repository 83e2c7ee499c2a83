"""Test doubles for integration tests without Lean: a stand-in REPL process speaking the Lean REPL's
exact wire format (`python -m kimina_grpc.testing.fake_repl`) and helpers to point a server at it."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

FAKE_REPL_MODULE = "kimina_grpc.testing.fake_repl"
FAKE_AST_EXPORT_MODULE = "kimina_grpc.testing.fake_ast_export"


def fake_repl_command(*args: str) -> str:
    """A LEAN_SERVER_REPL_COMMAND value that starts the stand-in REPL with this interpreter."""
    return shlex.join([sys.executable, "-m", FAKE_REPL_MODULE, *args])


def fake_ast_export_command(*args: str) -> str:
    """A LEAN_SERVER_AST_EXPORT_COMMAND value that runs the stand-in exporter with this interpreter
    (`--strict`: a module the project has no source for is unknown, as with the real tool)."""
    return shlex.join([sys.executable, "-m", FAKE_AST_EXPORT_MODULE, *args])


@contextlib.contextmanager
def serve_process(
    env: Mapping[str, str] | None = None, wrapper: Sequence[str] = ()
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Run `kimina-grpc serve` in a child process on a free loopback port with the stand-in REPL
    (override anything with `env`, e.g. LEAN_SERVER_MAX_REPLS); yield the process and its port.
    Unless `env` says otherwise: no sandbox, and no auth when no API key is given. `wrapper` is a
    command line the server runs under (e.g. `unshare --pid --fork`).
    The server is killed on exit if it is still running."""
    full = {
        **os.environ,
        "LEAN_SERVER_HOST": "127.0.0.1",
        "LEAN_SERVER_PORT": "0",
        "LEAN_SERVER_REPL_COMMAND": fake_repl_command(),
        "LEAN_SERVER_MAX_REPL_MEM": "0",
        "LEAN_SERVER_LOG_LEVEL": "INFO",  # its "serving" line carries the port
        "LEAN_SERVER_ENVIRONMENT": "prod",
        "LEAN_SERVER_SANDBOX": "off",
        **(env or {}),
    }
    if "LEAN_SERVER_AUTH" not in full and not (full.get("LEAN_SERVER_API_KEY") or full.get("LEAN_SERVER_API_KEY_FILE")):
        full["LEAN_SERVER_AUTH"] = "off"
    proc = subprocess.Popen(
        [*wrapper, sys.executable, "-m", "kimina_grpc.cli", "serve"], env=full, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    port = 0
    for line in proc.stderr:
        if '"serving"' in line:
            port = int(json.loads(line)["port"])
            break
    if not port:
        proc.wait()
        raise RuntimeError(f"kimina-grpc serve exited with {proc.returncode} before serving")
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # a full pipe would block the server
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """`redis-server` on 127.0.0.1:`port`, no persistence; returns once it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (Debian: apt-get install redis-server)")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"redis-server did not answer on port {port}")


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A throwaway Redis on a free loopback port; stopped on exit."""
    port = free_port()
    proc = start_redis(port)
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
