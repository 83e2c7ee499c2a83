"""LEAN_SERVER_MAX_REPL_USES_JITTER on stand-in REPLs: REPLs started together are recycled at
different use counts, each at its own limit; with jitter 0 every REPL is recycled after exactly
MAX_REPL_USES, as before. The draw itself is table-tested in test_policy_recycling.py."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from kimina_grpc.repl import Split, Verdict, split_header
from kimina_grpc.settings import Settings
from kimina_grpc.supervisor import CheckOptions, Supervisor
from kimina_grpc.supervisor.policy import use_limit

from .helpers import eventually
from .helpers.pool import Started

USES = 8
JITTER = 6
SEED = 26
FIRST = ("repl-1", "repl-2", "repl-3")  # pre-warmed together, in this order


def _items(n: int) -> list[tuple[Split, CheckOptions]]:
    return [
        (split_header(f"import A\ntheorem t{i} := by\n  -- fake: sleep 0.02"), CheckOptions(timeout=10))
        for i in range(n)
    ]


async def proofs_per_first_repl(started: Started, jitter: int) -> tuple[Supervisor, dict[str, int]]:
    """Three REPLs pre-warmed together, then enough proofs that each reaches its limit with work
    still queued: how many proofs each of the three ran before it was recycled."""
    sup = await started(
        max_repls=3, init_repls={"import A": 3}, max_repl_uses=USES, max_repl_uses_jitter=jitter, seed=SEED
    )
    await eventually(lambda: sup.ready, what="pre-warmed")
    outs = [await j.future for j in sup.submit_many(_items(10 * USES))]
    assert {o.verdict for o in outs} == {Verdict.VALID}
    ran = Counter(o.repl_id for o in outs)
    return sup, {r: ran[r] for r in FIRST}


async def test_repls_started_together_are_recycled_at_their_own_limits(started: Started) -> None:
    rng = random.Random(SEED)  # the pool draws each REPL's limit as it starts it, in id order
    limits = {r: use_limit(USES, JITTER, rng) for r in FIRST}
    assert len(set(limits.values())) > 1, "the seed draws different limits"
    sup, ran = await proofs_per_first_repl(started, JITTER)
    assert ran == limits
    assert all(USES - JITTER <= n <= USES for n in ran.values())
    await eventually(lambda: sup.totals.recycles >= len(FIRST), what="recycled")


async def test_no_jitter_recycles_every_repl_after_max_repl_uses(started: Started) -> None:
    sup, ran = await proofs_per_first_repl(started, 0)
    assert ran == dict.fromkeys(FIRST, USES)
    await eventually(lambda: sup.totals.recycles >= len(FIRST), what="recycled")


def test_the_jitter_defaults_to_a_tenth_of_max_repl_uses_and_stays_below_it() -> None:
    def settings(**kw: Any) -> Settings:
        return Settings(_env_file=None, **kw)  # type: ignore[call-arg]

    assert settings(max_repl_uses=500).repl_uses_jitter() == 50
    assert settings(max_repl_uses=25).repl_uses_jitter() == 2
    assert settings(max_repl_uses=0).repl_uses_jitter() == 0
    assert settings(max_repl_uses=25, max_repl_uses_jitter=0).repl_uses_jitter() == 0
    assert settings(max_repl_uses=0, max_repl_uses_jitter=50).repl_uses_jitter() == 50  # never recycled: moot
    with pytest.raises(ValueError, match="MAX_REPL_USES_JITTER must be below"):
        settings(max_repl_uses=25, max_repl_uses_jitter=25)
