"""Headers outnumbering REPLs, on stand-in REPLs: the pool switches headers only when it pays
(counts of imports, never times; speed is `python -m bench scheduling`'s)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from kimina_grpc.repl import Split, Verdict, split_header
from kimina_grpc.supervisor import CheckOptions

from .helpers.pool import Started


def proofs(headers: list[str], per_header: int, cost: float) -> list[tuple[Split, CheckOptions]]:
    """Interleaved: A, B, C, A, B, C, ..."""
    return [
        (split_header(f"{h}\ntheorem t{i} : True := by\n  -- fake: sleep {cost}\n  trivial"), CheckOptions(timeout=30))
        for i in range(per_header)
        for h in headers
    ]


async def test_three_interleaved_headers_on_two_repls_import_each_header_about_once(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shape: 3 headers, 2 REPLs, 90 short proofs. The old rule gave the header without a
    # REPL one after waiting an import, which left another without one: nearly every proof paid an
    # import (58-85 of them).
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "0.3")
    sup = await started(max_repls=2, max_concurrent_imports=2)
    jobs = sup.submit_many(proofs(["import A", "import B", "import C"], per_header=30, cost=0.01))
    outcomes = await asyncio.wait_for(asyncio.gather(*(j.future for j in jobs)), 120)
    assert Counter(o.verdict for o in outcomes) == {Verdict.VALID: 90}
    assert sup.totals.imports <= 6


async def test_a_header_without_a_repl_is_served_before_the_others_drain(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One REPL, a long batch of A queued first, then one proof of B: B takes the REPL once it has
    # waited its turn (the starvation bound), not after all of A.
    monkeypatch.setenv("KIMINA_FAKE_IMPORT_SECONDS", "0.05")
    sup = await started(max_repls=1)
    a = sup.submit_many(proofs(["import A"], per_header=400, cost=0.02))
    b = sup.submit_many(proofs(["import B"], per_header=1, cost=0.0))
    await asyncio.wait_for(b[0].future, 60)
    assert sum(j.future.done() for j in a) < len(a)
    await asyncio.wait_for(asyncio.gather(*(j.future for j in a)), 120)
