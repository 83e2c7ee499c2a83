"""The cache room with the stand-in REPL: each distinct proof is checked once, every id answered once."""

from __future__ import annotations

import asyncio
import random
import shlex
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kimina_grpc.cache import CheckCache, MemoryStore, environment_id
from kimina_grpc.repl import ReplSpec, Verdict, split_header
from kimina_grpc.supervisor import CheckOptions, PoolSettings, Supervisor
from kimina_grpc.testing import fake_repl_command
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually
from .helpers.cache import checks
from .helpers.server import running

DIRECTIVES = ["", "  -- fake: error nope", "  -- fake: sorry"]
EXPECTED = [pb.VERDICT_VALID, pb.VERDICT_INVALID, pb.VERDICT_SORRY]


def workload(distinct: int, copies: int) -> tuple[list[pb.Proof], dict[str, pb.Verdict.ValueType]]:
    """`distinct` different proofs (valid, invalid, sorry in turn), each `copies` times, shuffled."""
    proofs, expected = [], {}
    for d in range(distinct):
        code = f"import A\n\ntheorem t{d} : True := by\n  -- fake: sleep 0.01\n{DIRECTIVES[d % 3]}\n  trivial"
        for c in range(copies):
            pid = f"p{d}-{c}"
            proofs.append(pb.Proof(id=pid, code=code))
            expected[pid] = EXPECTED[d % 3]
    random.Random(7).shuffle(proofs)
    return proofs, expected


async def test_thousand_proofs_hundred_distinct_in_one_verify_are_checked_a_hundred_times(fake_log: Path) -> None:
    proofs, expected = workload(100, 10)
    async with running(max_repls=2) as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        reply = await stub.Verify(pb.VerifyRequest(proofs=proofs, options=pb.ProofOptions(diagnostics=True)))
        assert [r.id for r in reply.results] == [p.id for p in proofs]  # each id once, in input order
        assert {r.id: r.verdict for r in reply.results} == expected
        ran = checks(fake_log)
        assert len(ran) == 100 and len(set(ran)) == 100
        shared = [r for r in reply.results if r.diagnostics.shared_check]
        assert len(shared) == 900 and not any(r.diagnostics.from_cache for r in reply.results)
        # A joiner gets the check's own Lean time and messages, under its own id.
        sample = next(r for r in shared if r.verdict == pb.VERDICT_INVALID)
        assert sample.time_seconds >= 0.01 and [m.text for m in sample.messages] == ["nope"]
        # The same batch again: every proof from the cache, no Lean at all.
        again = await stub.Verify(pb.VerifyRequest(proofs=proofs, options=pb.ProofOptions(diagnostics=True)))
        assert {r.id: r.verdict for r in again.results} == expected
        assert all(r.diagnostics.from_cache for r in again.results) and len(checks(fake_log)) == 100
        info = await stub.GetServerInfo(pb.GetServerInfoRequest())
        assert (info.cache.misses, info.cache.joins, info.cache.hits, info.cache.entries) == (100, 900, 1000, 100)
        assert info.cache.backend == "memory" and info.cache.enabled and info.cache.bytes > 0


async def test_thousand_proofs_over_four_streams_are_checked_a_hundred_times(fake_log: Path) -> None:
    proofs, expected = workload(100, 10)
    async with running(max_repls=2, stream_window=32) as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)

        async def one_stream(part: list[pb.Proof]) -> list[pb.ProofResult]:
            async def requests() -> AsyncIterator[pb.StreamVerifyRequest]:
                for p in part:
                    yield pb.StreamVerifyRequest(proof=p)

            return [r.result async for r in stub.StreamVerify(requests())]

        parts = await asyncio.gather(*(one_stream(proofs[i::4]) for i in range(4)))
        got = Counter(r.id for part in parts for r in part)
        assert got == Counter(p.id for p in proofs)  # every id once
        assert {r.id: r.verdict for part in parts for r in part} == expected
        ran = checks(fake_log)
        assert len(ran) == 100 and len(set(ran)) == 100


async def test_timeout_and_repl_error_are_checked_again_next_time(fake_log: Path) -> None:
    async with running() as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        slow = pb.Proof(id="slow", code="theorem s : True := by\n  -- fake: sleep 0.5\n  trivial")
        broken = pb.Proof(id="broken", code="theorem b : True := by\n  -- fake: repl-error boom\n  trivial")
        for _ in range(2):
            reply = await stub.Verify(
                pb.VerifyRequest(proofs=[slow, broken], options=pb.ProofOptions(timeout_seconds=0.2))
            )
            assert [r.verdict for r in reply.results] == [pb.VERDICT_TIMEOUT, pb.VERDICT_REPL_ERROR]
        assert sorted(Counter(checks(fake_log)).values()) == [2, 2]  # each ran on both calls
        info = await stub.GetServerInfo(pb.GetServerInfoRequest())
        assert info.cache.entries == 0 and info.cache.hits == 0


async def test_bypass_neither_reads_nor_writes_the_cache(fake_log: Path) -> None:
    async with running() as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        code = "theorem t : True := by\n  trivial"
        off = pb.ProofOptions(cache=False, diagnostics=True)
        # Two identical bypassing proofs: two checks (no dedupe), nothing stored.
        reply = await stub.Verify(
            pb.VerifyRequest(proofs=[pb.Proof(id="a", code=code), pb.Proof(id="b", code=code)], options=off)
        )
        assert [r.verdict for r in reply.results] == [pb.VERDICT_VALID] * 2
        assert len(checks(fake_log)) == 2
        # Not written: a cached proof is a miss now, then stored.
        cached = await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id="c", code=code)]))
        assert cached.results[0].verdict == pb.VERDICT_VALID and len(checks(fake_log)) == 3
        # Not read: a proof's own option overrides the request's.
        own = pb.Proof(id="d", code=code, options=pb.ProofOptions(cache=False))
        reply = await stub.Verify(pb.VerifyRequest(proofs=[own], options=pb.ProofOptions(diagnostics=True)))
        assert not reply.results[0].diagnostics.from_cache and len(checks(fake_log)) == 4
        hit = await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id="e", code=code)], options=off))
        assert len(checks(fake_log)) == 5 and not hit.results[0].diagnostics.from_cache


async def test_a_hit_keeps_the_original_lean_time_and_positions(fake_log: Path) -> None:
    async with running() as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        code = "import A\n\n\ntheorem t : True := by\n  -- fake: sleep 0.2\n  -- fake: error late\n  trivial"
        opts = pb.ProofOptions(diagnostics=True)
        first = (await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id="1", code=code)], options=opts))).results[0]
        hit = (await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id="2", code=code)], options=opts))).results[0]
        assert hit.id == "2" and hit.diagnostics.from_cache and not first.diagnostics.from_cache
        assert hit.time_seconds == first.time_seconds >= 0.2
        assert [(m.start.line, m.text) for m in hit.messages] == [(6, "late")]
        # The same body and header with the body one line lower: positions differ, so another key.
        moved = code.replace("import A\n", "import A\n\n", 1)
        other = (await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id="3", code=moved)], options=opts))).results[0]
        assert not other.diagnostics.from_cache and [m.start.line for m in other.messages] == [7]
        # A timeout shorter than the original check's time: what its own check would do, a new check.
        short = pb.ProofOptions(diagnostics=True, timeout_seconds=0.1)
        timed = (await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id="4", code=code)], options=short))).results[0]
        assert timed.verdict == pb.VERDICT_TIMEOUT and not timed.diagnostics.from_cache
        assert len(checks(fake_log)) == 3


async def test_an_entry_above_the_size_bound_is_not_stored(fake_log: Path) -> None:
    async with running(cache_max_entry_bytes=2000) as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        big = pb.Proof(id="big", code=f"theorem t : True := by\n  -- fake: error {'x' * 3000}\n  trivial")
        small = pb.Proof(id="small", code="theorem t : True := by\n  -- fake: error short\n  trivial")
        for _ in range(2):
            reply = await stub.Verify(pb.VerifyRequest(proofs=[big, small]))
            assert [r.verdict for r in reply.results] == [pb.VERDICT_INVALID] * 2
        assert sorted(Counter(checks(fake_log)).values()) == [1, 2]  # the big one ran twice


async def test_cache_off_checks_every_copy(fake_log: Path) -> None:
    proofs, expected = workload(5, 4)
    async with running(cache_enabled=False) as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        reply = await stub.Verify(pb.VerifyRequest(proofs=proofs))
        assert {r.id: r.verdict for r in reply.results} == expected
        assert len(checks(fake_log)) == 20
        info = await stub.GetServerInfo(pb.GetServerInfoRequest())
        assert info.cache.backend == "off" and not info.cache.enabled


# ----------------------------------------------------------------- the layer alone


async def layer(**kw: Any) -> tuple[Supervisor, CheckCache]:
    sup = Supervisor(PoolSettings(spec=ReplSpec(argv=tuple(shlex.split(fake_repl_command()))), max_repls=1))
    await sup.start()
    return sup, CheckCache(sup, "env-a", memory=MemoryStore(1 << 20), **kw)


def item(body: str, timeout: float = 10.0) -> tuple[Any, CheckOptions]:
    return split_header(f"theorem t : True := by\n{body}\n  trivial"), CheckOptions(timeout=timeout)


async def test_cancelling_one_waiter_keeps_the_shared_check_and_the_last_one_cancels_it(fake_log: Path) -> None:
    sup, cache = await layer()
    try:
        a, b = await cache.submit_many([item("  -- fake: sleep 0.3"), item("  -- fake: sleep 0.3")])
        await eventually(lambda: len(checks(fake_log)) == 1, what="the shared check running")
        cache.cancel(a)
        outcome = await b.future
        assert outcome.verdict is Verdict.VALID and outcome.shared and a.future.cancelled()
        assert len(checks(fake_log)) == 1
        # The only REPL is busy with `blocker`; both waiters of a queued check leave: it never runs.
        blocker = (await cache.submit_many([item("  -- fake: sleep 0.3\n  -- blocker")]))[0]
        await eventually(lambda: any("blocker" in body for body in checks(fake_log)), what="the blocker running")
        c, d = await cache.submit_many([item("  -- queued"), item("  -- queued")])
        e = await cache.submit_when_room(*item("  -- queued"))
        assert e.check is c.check  # a stream's proof joins too
        for t in (c, d, e):
            cache.cancel(t)
        assert sup.queued == 0
        assert (await blocker.future).verdict is Verdict.VALID
        await eventually(lambda: not any(h.busy for h in sup.state().headers), what="the REPL idle")
        assert not any("queued" in body for body in checks(fake_log))
        # The key is free again: a new caller starts a new check.
        f = await cache.submit_when_room(*item("  -- queued"))
        assert (await f.future).verdict is Verdict.VALID and not (await f.future).shared
    finally:
        await sup.close()


async def test_only_the_same_timeout_joins_a_check(fake_log: Path) -> None:
    sup, cache = await layer()
    try:
        short, long_ = await cache.submit_many([item("  -- fake: sleep 0.4", 0.2), item("  -- fake: sleep 0.4", 5)])
        assert long_.check is not short.check
        same = await cache.submit_when_room(*item("  -- fake: sleep 0.4", 5))
        assert same.check is long_.check
        shorter = await cache.submit_when_room(*item("  -- fake: sleep 0.4", 0.3))
        # Joining the longer check would keep it waiting past its own 0.3 s: it runs its own.
        assert shorter.check is not long_.check and shorter.check is not short.check
        assert (await short.future).verdict is Verdict.TIMEOUT
        assert (await long_.future).verdict is Verdict.VALID and (await same.future).shared
        late = await shorter.future
        assert late.verdict is Verdict.TIMEOUT and not late.shared
    finally:
        await sup.close()


async def test_identical_proofs_of_one_call_get_one_verdict_also_past_a_long_trust_review(fake_log: Path) -> None:
    """A judge's import takes longer than the proof's timeout: the owner and its joiners get the same
    VALID (the review is not the proof's Lean time, and a hit with it stays a hit)."""
    from kimina_grpc.supervisor.jobs import TrustLevel, TrustPolicy

    spec = ReplSpec(argv=tuple(shlex.split(fake_repl_command())), env={"KIMINA_FAKE_IMPORT_SECONDS": "1.2"})
    sup = Supervisor(PoolSettings(spec=spec, max_repls=1, import_cost_hint=0.1))
    await sup.start()
    cache = CheckCache(sup, "env-a", memory=MemoryStore(1 << 20))
    options = CheckOptions(timeout=1.0, trust=TrustPolicy(TrustLevel.JUDGE, theorem="t"))
    split = split_header("import A\ntheorem t : True := trivial")
    try:
        tickets = await cache.submit_many([(split, options)] * 3)
        outs = await asyncio.wait_for(asyncio.gather(*(t.future for t in tickets)), 30)
        assert [o.verdict for o in outs] == [Verdict.VALID] * 3
        assert [o.shared for o in outs] == [False, True, True]
        assert all(o.time_seconds < 1.0 < o.review_seconds for o in outs)
        hit = (await cache.submit_many([(split, options)]))[0]
        assert (await hit.future).verdict is Verdict.VALID and (await hit.future).from_cache
    finally:
        await sup.close()


async def test_a_caller_asking_for_diagnostics_never_joins_a_check_that_measures_none(fake_log: Path) -> None:
    sup, cache = await layer()
    try:
        split, plain = item("  -- fake: cpu 0.2")
        measured = CheckOptions(timeout=10.0, diagnostics=True)
        a, b, c = await cache.submit_many([(split, plain), (split, measured), (split, plain)])
        assert b.check is not a.check and c.check in (a.check, b.check)
        d = await cache.submit_when_room(split, measured)
        assert d.check is b.check  # a measured check answers a caller who asks for measures
        out = await b.future
        assert out.cpu_seconds > 0.1 and not out.shared
        assert (await d.future).cpu_seconds == out.cpu_seconds
    finally:
        await sup.close()


async def test_a_changed_project_fingerprint_misses(tmp_path: Path, fake_log: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "lean-toolchain").write_text("leanprover/lean4:v4.19.0\n")
    (project / "lake-manifest.json").write_text('{"packages": [{"name": "mathlib", "rev": "aaa"}]}\n')
    argv = shlex.split(fake_repl_command())
    before = environment_id("v4.19.0", argv, project)
    assert environment_id("v4.19.0", argv, project) == before  # stable
    (project / "lake-manifest.json").write_text('{"packages": [{"name": "mathlib", "rev": "bbb"}]}\n')
    after = environment_id("v4.19.0", argv, project)
    (project / "lean-toolchain").write_text("leanprover/lean4:v4.20.0\n")
    assert len({before, after, environment_id("v4.19.0", argv, project), environment_id("v4.20.0", argv, project)}) == 4

    sup = Supervisor(PoolSettings(spec=ReplSpec(argv=tuple(argv)), max_repls=1))
    await sup.start()
    shared = MemoryStore(1 << 20)  # one store, as Redis is for servers of both environments
    try:
        old = CheckCache(sup, before, memory=shared)
        new = CheckCache(sup, after, memory=shared)
        for cache in (old, old, new, new):
            (ticket,) = await cache.submit_many([item("  -- fake: sorry")])
            assert (await ticket.future).verdict is Verdict.SORRY
        assert len(checks(fake_log)) == 2 and (old.hits, new.hits) == (1, 1)
    finally:
        await sup.close()


async def test_a_server_reads_its_project_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "lake-manifest.json").write_text("{}")
    async with running(project_dir=str(tmp_path)) as (_, ch):
        info = await pb_grpc.VerifierServiceStub(ch).GetServerInfo(pb.GetServerInfoRequest())
        assert info.cache.environment == environment_id("v4.19.0", shlex.split(fake_repl_command()), tmp_path)


def test_cache_settings_read_sizes_and_refuse_a_url_that_is_not_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from kimina_grpc.settings import Settings

    monkeypatch.setenv("LEAN_SERVER_CACHE_MAX_BYTES", "64M")
    monkeypatch.setenv("LEAN_SERVER_CACHE_MAX_ENTRY_BYTES", "0")
    monkeypatch.setenv("LEAN_SERVER_CACHE_URL", "")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.cache_max_bytes, s.cache_max_entry_bytes, s.cache_url) == (64 << 20, None, None)
    monkeypatch.setenv("LEAN_SERVER_CACHE_URL", "http://cache:6379")
    with pytest.raises(ValidationError, match="LEAN_SERVER_CACHE_URL"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_the_key_has_the_trust_policy_and_untrusted_round_trips() -> None:
    from dataclasses import replace

    from kimina_grpc.cache import proof_key
    from kimina_grpc.cache.store import CACHEABLE, decode, encode
    from kimina_grpc.supervisor.jobs import Outcome, TrustLevel, TrustPolicy

    split, base = item("  -- x")
    audit = replace(base, trust=TrustPolicy(TrustLevel.AUDIT, "t"))
    keys = {
        proof_key("e", split, base),
        proof_key("e", split, audit),
        proof_key("e", split, replace(base, trust=TrustPolicy(TrustLevel.JUDGE, "t"))),
        proof_key("e", split, replace(base, trust=TrustPolicy(TrustLevel.AUDIT, "t", statement="theorem t : True"))),
        proof_key(
            "e",
            split,
            replace(base, trust=TrustPolicy(TrustLevel.AUDIT, "t", allowed_axioms=frozenset({"Lean.ofReduceBool"}))),
        ),
        proof_key("e", split, replace(base, infotree="full")),
        proof_key("e", split, replace(base, all_tactics=True)),
        proof_key("e", split, replace(base, reuse=False)),
        proof_key("other", split, base),
    }
    assert len(keys) == 9
    # Not in the key: the timeout, diagnostics.
    assert proof_key("e", split, replace(base, timeout=1, diagnostics=True)) == proof_key("e", split, base)
    untrusted = Outcome(
        Verdict.UNTRUSTED, time_seconds=1.5, reason="axioms: t depends on foo", axioms=(("t", ("foo",)),)
    )
    assert Verdict.UNTRUSTED in CACHEABLE and Verdict.TIMEOUT not in CACHEABLE
    assert decode(encode(untrusted)) == replace(untrusted, from_cache=True)
    assert decode(b"not json") is None and decode(b'{"verdict": "NOPE"}') is None
