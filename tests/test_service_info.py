"""GetServerInfo's message from snapshots alone: no server, no pool, no event loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimina_grpc.cache.layer import CacheStats
from kimina_grpc.prooflog.writer import LogState
from kimina_grpc.service.info import NO_IMPORTS, server_info
from kimina_grpc.service.posture import Posture
from kimina_grpc.settings import Settings
from kimina_grpc.settings import lean as lean_settings
from kimina_grpc.supervisor.state import HeaderStats, PoolState
from kimina_grpc.v1 import verifier_pb2 as pb

POOL = PoolState(
    ready=False,
    queued=3,
    headers=(HeaderStats("", 1, 0, 0, 2), HeaderStats("import Mathlib", 2, 1, 1, 0, spares=1)),
    imports=4,
    recycles=5,
    kills=6,
    crashes=7,
    completed=8,
    warm_swaps=9,
    cold_swaps=10,
)
CACHE = CacheStats(True, "memory", True, 11, 12, 13, 14, 15, 16, "env-1")
SESSIONS = pb.SessionsState(open=2, max_sessions=8)
POSTURE = Posture(sandbox="bwrap", auth_required=True, tls=True, tls_client_auth=False, warnings=("w",))


def settings(**kw: object) -> Settings:
    return Settings(_env_file=None, lean_version="v4.19.0", max_repls=5, **kw)  # type: ignore[call-arg, arg-type]


def test_every_field_comes_from_its_snapshot() -> None:
    log = LogState(True, "sqlite", True, 20, 21, 22, 23, 1.5, "")
    got = server_info(
        POOL,
        not_ready_reason="warming up",
        cache=CACHE,
        proof_log=log,
        sessions=SESSIONS,
        settings=settings(repl_command="repl --flag 'a b'"),
        posture=POSTURE,
    )
    assert (got.ready, got.not_ready_reason, got.queued, got.max_repls) == (False, "warming up", 3, 5)
    assert (got.lean_version, got.repl_command) == ("v4.19.0", "repl --flag 'a b'")
    assert [(h.header, h.label, h.warm, h.busy, h.starting, h.queued, h.spares) for h in got.headers] == [
        ("", NO_IMPORTS, 1, 0, 0, 2, 0),
        ("import Mathlib", "import Mathlib", 2, 1, 1, 0, 1),
    ]
    c = got.counters
    assert (c.imports, c.recycles, c.kills, c.crashes, c.completed, c.warm_swaps, c.cold_swaps) == tuple(range(4, 11))
    k = got.cache
    assert (k.enabled, k.backend, k.remote_up, k.entries, k.bytes, k.hits, k.misses, k.joins) == (
        True,
        "memory",
        True,
        11,
        12,
        13,
        14,
        15,
    )
    assert (k.backend_errors, k.environment) == (16, "env-1")
    assert (got.proof_log.backend, got.proof_log.written, got.proof_log.lag_seconds) == ("sqlite", 20, 1.5)
    assert got.sessions == SESSIONS
    assert (got.sandbox, got.auth_required, got.tls, got.tls_client_auth) == ("bwrap", True, True, False)
    assert list(got.security_warnings) == ["w"]
    assert got.memory_accounting == POSTURE.memory_accounting
    assert got.server_version


def test_no_proof_log_and_no_repl_command_say_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Run where a workspace would be discovered (a `repl/` in the current directory, as on a developer's
    # machine or under ~/workspace): the patched discovery, not the machine, says there is none.
    (tmp_path / "repl").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(lean_settings, "discover_workspace", lambda: None)
    got = server_info(
        POOL, not_ready_reason="", cache=CACHE, proof_log=None, sessions=SESSIONS, settings=settings(), posture=POSTURE
    )
    assert got.proof_log.backend == "off"
    assert got.repl_command.startswith("(none: no Lean workspace found")
