"""`kimina-grpc demo` as a new user meets it: a REPL per core (or --repls), a server that says it runs
the stand-in, an exporter with the one module the README names, and start-up lines whose commands
run as printed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from kimina_grpc.client import KiminaClient, ServerInfo

from .helpers import eventually_sync


@contextmanager
def demo(*args: str) -> Iterator[tuple[int, list[str]]]:
    """The demo on a free port; yields the port and the commands its start-up lines suggest."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAN_SERVER_")}
    env |= {"LEAN_SERVER_PORT": "0", "LEAN_SERVER_DRAIN_SECONDS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kimina_grpc.cli", "demo", *args],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        port, commands, logged = 0, [], False
        for line in proc.stderr:
            found = re.match(r"kimina-grpc demo: serving on 127\.0\.0\.1:(\d+) ", line)
            if found:
                port = int(found.group(1))
            elif port and line.startswith("  "):
                commands.append(line.strip())
            elif port:
                break
            else:
                # The demo's lines come right after the server's own "serving" line.
                assert not logged, f"after the serving line came {line!r}, not what to try next"
                logged = bool(re.search(r"serving .*port=\d+", line))
        assert port, "the demo did not say where it serves"
        yield port, commands
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_the_demo_says_what_it_runs_and_what_to_try() -> None:
    with demo() as (port, commands):
        with KiminaClient(f"127.0.0.1:{port}") as client:
            info = client.server_info()
            assert isinstance(info, ServerInfo)
            assert info.lean_version.startswith("stand-in (no Lean")
            assert info.max_repls == os.cpu_count()
            eventually_sync(lambda: client.server_info().ready)
            [known, unknown] = client.export_ast(["Mathlib.Logic.Demo", "Mathlib.Logic.Nope"])
            assert known.error == "" and "not_not_intro" in known.ast
            assert unknown.ast == "" and "Mathlib.Logic.Nope does not exist" in unknown.error
        assert len(commands) == 3  # check, the client snippet, grpcurl (make setup installs it)
        outputs = []
        for command in commands:
            run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False)
            assert run.returncode == 0, (command, run.stderr)
            outputs.append(run.stdout)
        assert outputs[0].startswith("<stdin>: VALID (")
        assert outputs[1].strip() == "VALID"
        assert '"lean_version": "stand-in (no Lean' in outputs[2]


def test_the_demo_takes_a_number_of_repls() -> None:
    with demo("--repls", "3") as (port, _), KiminaClient(f"127.0.0.1:{port}") as client:
        assert client.server_info().max_repls == 3


def test_the_demo_refuses_no_repls() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "kimina_grpc.cli", "demo", "--repls", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2 and run.stderr == "kimina-grpc: --repls must be at least 1 (got 0)\n"
