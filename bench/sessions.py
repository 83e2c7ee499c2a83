"""Interactive sessions (ProofSession) through a real server process with the stand-in REPL.

Tactics/s through one session (one at a time, and 64 pipelined), across 64 sessions at once (each
one tactic at a time), the server process's CPU per tactic (its own, not the REPLs'), and the time
from an outside kill of a session's REPL to the answer of a tactic on its 50th state (the session
restored: its code re-run and 50 tactics replayed on a fresh REPL, 1 s stand-in import included).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import psutil

from kimina_grpc.client import AsyncKiminaClient, AsyncSession
from kimina_grpc.testing import serve_process

CODE = "import Demo\n\ntheorem t (p q : Prop) (hp : p) (hq : q) : p ∧ q := by sorry"
TACTIC = "constructor\n-- fake: goals p || q"
ONE = 500
MANY_SESSIONS = 64
PER_SESSION = 50
DEPTH = 50
IMPORT = 1.0


async def _serial(s: AsyncSession, n: int) -> None:
    root = s.roots[0].state
    for _ in range(n):
        step = await s.run(root, TACTIC)
        assert step.status == "incomplete", step


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def _measure(port: int, server: psutil.Process) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with AsyncKiminaClient(f"127.0.0.1:{port}") as client:
        async with client.session(CODE, timeout=30) as s:
            await _serial(s, 20)  # warm
            cpu, t0 = _cpu(server), time.perf_counter()
            await _serial(s, ONE)
            wall = time.perf_counter() - t0
            out["one_session_serial_tactics_per_s"] = ONE / wall
            out["server_cpu_ms_per_tactic"] = 1000 * (_cpu(server) - cpu) / ONE
            root = s.roots[0].state
            t0 = time.perf_counter()
            for _ in range(ONE // 64):
                await s.run_many([(root, TACTIC)] * 64)
            out["one_session_pipelined64_tactics_per_s"] = (ONE // 64 * 64) / (time.perf_counter() - t0)
        sessions = [client.session(CODE, timeout=30) for _ in range(MANY_SESSIONS)]
        await asyncio.gather(*(x.open() for x in sessions))
        t0 = time.perf_counter()
        await asyncio.gather(*(_serial(x, PER_SESSION) for x in sessions))
        out["sessions_64_tactics_per_s"] = MANY_SESSIONS * PER_SESSION / (time.perf_counter() - t0)
        await asyncio.gather(*(x.close() for x in sessions))
        async with client.session(CODE, timeout=30) as s:
            state = s.roots[0].state
            for _ in range(DEPTH):
                state = (await s.run(state, "skip")).state
            info = await client.server_info()
            victims = [p for p in server.children(recursive=True) if "fake_repl" in " ".join(p.cmdline())]
            t0 = time.perf_counter()
            for p in victims:  # every REPL: the session's is among them
                p.kill()
            step = await s.run(state, TACTIC)
            while step.status != "incomplete":  # a tactic sent before the death was noticed
                step = await s.run(state, TACTIC)
            out["restore_50_states_seconds"] = time.perf_counter() - t0
            out["restores"] = (await client.server_info()).sessions.restores - info.sessions.restores
    return out


def main() -> dict[str, Any]:
    env = {
        "KIMINA_FAKE_IMPORT_SECONDS": str(IMPORT),
        "LEAN_SERVER_SESSION_REPLS": "4",
        "LEAN_SERVER_SESSIONS_PER_REPL": "16",
    }
    with serve_process({**os.environ, **env}) as (proc, port):
        data = asyncio.run(_measure(port, psutil.Process(proc.pid)))
    data["machine"] = f"{os.cpu_count()} cores, shared with other work"
    print("sessions (stand-in REPL, one server process):")
    for key, value in data.items():
        print(f"  {key:42} {value:.2f}" if isinstance(value, float) else f"  {key:42} {value}")
    return data
