"""The supervisor with stand-in REPLs, shared by the supervisor, fidelity and fault tests (the
`started` fixture in conftest.py makes and closes them)."""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from kimina_grpc.repl import ReplSpec, split_header
from kimina_grpc.supervisor import CheckOptions, PoolSettings, Supervisor
from kimina_grpc.supervisor.jobs import Outcome
from kimina_grpc.testing import fake_repl_command

from . import eventually

ARGV = tuple(shlex.split(fake_repl_command()))


def pool(**kw: object) -> Supervisor:
    spec = kw.pop("spec", ReplSpec(argv=ARGV))
    return Supervisor(PoolSettings(spec=spec, import_cost_hint=0.1, **kw))  # type: ignore[arg-type]


async def check(sup: Supervisor, code: str, timeout: float = 10.0, **opts: object) -> Outcome:
    job = sup.submit(split_header(code), CheckOptions(timeout=timeout, **opts))  # type: ignore[arg-type]
    return await job.future


Started: TypeAlias = Callable[..., Awaitable[Supervisor]]


async def warm(sup: Supervisor, n: int) -> None:
    """Until the pool holds `n` warm REPLs (over all headers)."""
    await eventually(lambda: sum(h.warm for h in sup.state().headers) == n, what=f"{n} warm REPLs")


async def busy(sup: Supervisor, n: int) -> None:
    """Until `n` proofs are on REPLs (sent: the stand-in is working on them)."""
    await eventually(lambda: sum(h.busy for h in sup.state().headers) == n, what=f"{n} proofs on REPLs")


def repl_pids(sup: Supervisor) -> list[int]:
    """The pids of the pool's live REPLs."""
    return [w.repl.pid for w in sup.workers() if w.repl is not None]
