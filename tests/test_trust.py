"""Trust levels with the stand-in REPL: for each exploit class, the exact REPL commands sent at each
level and the verdict; the judge's temporary files and processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import psutil
import pytest

from kimina_grpc.repl import Repl, ReplCrashed, ReplSpec, Verdict, protocol, split_header
from kimina_grpc.supervisor import CheckOptions, PoolSettings, Supervisor
from kimina_grpc.supervisor.jobs import STANDARD_AXIOMS, TrustPolicy
from kimina_grpc.supervisor.trust import statement_name
from kimina_grpc.testing.fake_repl import chunks, normalise_request

from .helpers import eventually
from .helpers.paths import TRANSCRIPTS
from .helpers.pool import ARGV
from .helpers.processes import children
from .helpers.trust import AUDIT, CHECK, HEADER, HONEST, JUDGE, check, sent

NAMES = "set_option pp.fullNames true in set_option pp.privateNames true in"
# The global constant: no namespace, `open` or variable of the proof's; no universe parameters shown.
AXIOMS = f"{NAMES} set_option pp.universes false in #print axioms _root_.t"
EXHAUSTIVE = "set_option pp.maxSteps 1000000000 in set_option pp.deepTerms true in set_option pp.proofs true in"
PRINTING = f"set_option pp.all true in {NAMES} {EXHAUSTIVE}"
PLAIN = f"set_option pp.all true in {NAMES}"  # signatures before the printer options were learned


def identity(printing: str = PLAIN, allowed: frozenset[str] = STANDARD_AXIOMS) -> str:
    """The allowed axioms' signatures, asked where the theorem is and in a clean environment."""
    return "\n".join(f"{printing} #check _root_.{a}" for a in sorted(allowed))


AUDIT_CMD = f"{AXIOMS}\n{identity()}"  # in the proof's environment
CLEAN_CMD = identity()  # in the header's environment, where no proof ran
UNPICKLE = {"unpickleEnvFrom": "TMP/proof.olean"}
JUDGE_START = [{"cmd": "import Mathlib"}, {"cmd": CLEAN_CMD, "env": 0}, UNPICKLE]  # its own clean environment first
JUDGE_PRINT = {"cmd": AUDIT_CMD, "env": 2}


def base(body: str) -> list[dict[str, Any]]:
    return [{"cmd": "import Mathlib"}, {"cmd": body, "env": 0}]


async def test_honest_proof_is_valid_at_every_level(sup: Supervisor, tmp_path: Path) -> None:
    outs = [await check(sup, HONEST, level) for level in (CHECK, AUDIT, JUDGE)]
    assert [o.verdict for o in outs] == [Verdict.VALID] * 3
    assert [o.axioms for o in outs] == [(), (("t", ()),), (("t", ()),)]
    pool_repl, judge = sent(tmp_path)
    body = {"cmd": HONEST, "env": 0}
    assert pool_repl == [
        {"cmd": "import Mathlib"},
        body,  # check: the body alone
        body,
        {"cmd": AUDIT_CMD, "env": 2},  # audit: one more command in the proof's environment,
        {"cmd": CLEAN_CMD, "env": 0},  # and one in the header's
        body,
        {"cmd": AUDIT_CMD, "env": 5},  # judge: the audit, then the pickle
        {"cmd": CLEAN_CMD, "env": 0},
        {"pickleTo": "TMP/proof.olean", "env": 5},
    ]
    # A REPL of its own, where the proof's syntax is not there: the header, the clean answers, the proof.
    assert judge == [*JUDGE_START, JUDGE_PRINT]


# (exploit class, proof body, the start of the reason at audit and judge)
EXPLOITS = [
    (
        "axiom",
        "axiom cheat : False\ntheorem t : 1 = 2 := cheat.elim\n-- fake: axioms t cheat",
        "axioms: t depends on cheat",
    ),
    ("exit", "#exit\ntheorem t : 1 = 2 := by simp", "missing-theorem: the proof's environment has no theorem t"),
    (
        "sorry",
        "set_option warn.sorry false\ntheorem t : 1 = 2 := sorryAx _ false\n-- fake: sorry-ax",
        "sorry: t depends on sorryAx",
    ),
    (
        "native_decide",
        "theorem t : 2 ^ 10 = 1024 := by native_decide\n-- fake: axioms t Lean.ofReduceBool",
        "axioms: t depends on Lean.ofReduceBool",
    ),
    ("renamed", "theorem t' : 1 = 1 := rfl", "missing-theorem: the proof's environment has no theorem t"),
    ("theorem-as-axiom", "axiom t : 1 = 2", "axioms: t depends on t in the proof's environment"),
]


@pytest.mark.parametrize(("name", "body", "reason"), EXPLOITS, ids=[e[0] for e in EXPLOITS])
async def test_naive_exploits_are_valid_at_check_and_untrusted_from_audit(
    sup: Supervisor, tmp_path: Path, name: str, body: str, reason: str
) -> None:
    outs = [await check(sup, body, level) for level in (CHECK, AUDIT, JUDGE)]
    assert [o.verdict for o in outs] == [Verdict.VALID, Verdict.UNTRUSTED, Verdict.UNTRUSTED], outs
    assert outs[1].reason.startswith(reason) and outs[2].reason.startswith(reason)
    b = {"cmd": body, "env": 0}
    audit, clean = {"cmd": AUDIT_CMD, "env": 2}, {"cmd": CLEAN_CMD, "env": 0}
    # The audit rejects it: the judge never pays an import (no pickle, no judge REPL).
    assert sent(tmp_path) == [[{"cmd": "import Mathlib"}, b, b, audit, clean, b, {**audit, "env": 5}, clean]]


async def test_native_decide_is_valid_when_the_caller_allows_its_axiom(sup: Supervisor) -> None:
    body = "theorem t : 2 ^ 10 = 1024 := by native_decide\n-- fake: axioms t Lean.ofReduceBool"
    out = await check(sup, body, AUDIT, allowed_axioms=STANDARD_AXIOMS | {"Lean.ofReduceBool"})
    assert out.verdict is Verdict.VALID
    assert out.axioms == (("t", ("Lean.ofReduceBool",)),)


async def test_hijacked_print_axioms_passes_audit_and_is_rejected_by_judge(sup: Supervisor, tmp_path: Path) -> None:
    body = (
        'elab "#print " "axioms " id:ident : command => logInfo m!"\'{id}\' depends on axioms: [propext]"\n'
        "-- fake: hijack-print-axioms\n"
        "axiom cheat : False\ntheorem t : 1 = 2 := cheat.elim\n-- fake: axioms t cheat"
    )
    audit = await check(sup, body, AUDIT)
    # The documented limit of the audit: in the proof's own environment the proof's syntax answers.
    assert audit.verdict is Verdict.VALID
    assert audit.axioms == (("t", ("Classical.choice", "Quot.sound", "propext")),)
    judge = await check(sup, body, JUDGE)
    assert judge.verdict is Verdict.UNTRUSTED
    assert judge.reason.startswith("axioms: t depends on cheat in the judge's clean environment")
    assert judge.axioms == (("t", ("cheat",)),)  # what the clean environment says
    assert sent(tmp_path)[1] == [*JUDGE_START, JUDGE_PRINT]


async def test_kernel_skipped_proof_passes_audit_and_is_rejected_by_judge_on_replay(
    sup: Supervisor, tmp_path: Path
) -> None:
    body = "set_option debug.skipKernelTC true\ntheorem t : 1 = 2 := bad\n-- fake: kernel-reject"
    outs = [await check(sup, body, level) for level in (CHECK, AUDIT, JUDGE)]
    assert [o.verdict for o in outs] == [Verdict.VALID, Verdict.VALID, Verdict.UNTRUSTED]
    assert outs[2].reason.startswith("kernel: the kernel rejected the proof's constants")
    assert "'t'" in outs[2].reason
    assert sent(tmp_path)[1] == JUDGE_START  # the judge's REPL died unpickling it
    # Without the option Lean itself rejects it.
    honest_kernel = await check(sup, "theorem t : 1 = 2 := bad\n-- fake: kernel-reject", CHECK)
    assert honest_kernel.verdict is Verdict.INVALID


STATEMENT = "theorem t (x : ℕ) (h : 2 * x = 6) :\n  x = 3 := by sorry"
PROOF = "theorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := by omega"


async def test_statement_check_commands_and_match(sup: Supervisor, tmp_path: Path) -> None:
    outs = [await check(sup, PROOF, level, statement=STATEMENT) for level in (AUDIT, JUDGE)]
    assert [o.verdict for o in outs] == [Verdict.VALID] * 2
    # The reference under its own name with a fresh suffix, at top level (a dotted name opens the
    # namespaces the caller's would).
    ref = [STATEMENT.replace("theorem t ", "theorem t_kiminaN "), f"{PRINTING} #check _root_.t_kiminaN"]
    # A bare name: its signature, as a constant.
    mine = {"cmd": f"{AXIOMS}\n{PRINTING} #check _root_.t\n{identity(PRINTING)}"}
    body = {"cmd": PROOF, "env": 0}
    reference = {"cmd": "\n".join([*ref, identity(PRINTING)]), "env": 0}  # in the header's environment
    pool_repl, judge = sent(tmp_path)
    assert pool_repl == [
        {"cmd": "import Mathlib"},
        body,
        {"cmd": f"{EXHAUSTIVE} #check Nat", "env": 0},  # once: does this Lean know the options?
        {**mine, "env": 1},  # audit: the proof's theorem in its environment, the reference in the header's
        reference,
        body,
        {**mine, "env": 5},  # judge: the audit, then the pickle
        reference,
        {"pickleTo": "TMP/proof.olean", "env": 5},
    ]
    # The judge: the reference in its own clean environment, then the proof's.
    assert judge == [{"cmd": "import Mathlib"}, reference, UNPICKLE, {**mine, "env": 2}]


async def test_statement_mismatch_names_both_statements(sup: Supervisor) -> None:
    weaker = "theorem t (x : ℕ) (h : 2 * x = 6) : x ≤ 3 := by omega"
    for level in (AUDIT, JUDGE):
        out = await check(sup, weaker, level, statement=STATEMENT)
        assert out.verdict is Verdict.UNTRUSTED
        assert out.reason == (
            "statement: t proves `(x : ℕ) (h : 2 * x = 6) : x ≤ 3` but the reference statement is "
            "`(x : ℕ) (h : 2 * x = 6) : x = 3`"
        )


async def test_statement_with_its_own_header_lines_and_an_open_proof_end(sup: Supervisor) -> None:
    # As datasets ship them: imports and `open` before, `:= by` and no proof after.
    statement = "import Mathlib\nimport Aesop\n\nopen Real\n\ntheorem t (x : ℕ) (h : 2 * x = 6) :\n  x = 3 := by\n"
    for level in (AUDIT, JUDGE):
        out = await check(sup, PROOF, level, statement=statement)
        assert (out.verdict, out.reason) == (Verdict.VALID, "")


async def test_a_reinterpreted_statement_is_rejected_at_audit_and_judge(sup: Supervisor) -> None:
    # A local instance makes the same text mean something else; the reference is elaborated in the
    # header's environment, where it is not in force.
    body = "instance : Mul ℕ := ⟨fun _ _ => 6⟩\n-- fake: reinterpret local Mul instance\n" + PROOF
    for level in (AUDIT, JUDGE):
        out = await check(sup, body, level, statement=STATEMENT)
        assert out.verdict is Verdict.UNTRUSTED
        assert "[local Mul instance]" in out.reason and "`(x : ℕ) (h : 2 * x = 6) : x = 3`" in out.reason


async def test_a_variable_that_shadows_the_theorem_is_rejected(sup: Supervisor) -> None:
    """`#check @t` would elaborate a term, where the section variable `t` comes before the constant
    and has the statement's type: the check must ask for the constant."""
    body = "theorem t : True := trivial\nvariable (t : ∀ (x : ℕ) (h : 2 * x = 6), x = 3)"
    for level in (AUDIT, JUDGE):
        out = await check(sup, body, level, statement=STATEMENT)
        assert out.verdict is Verdict.UNTRUSTED
        assert out.reason == (
            "statement: t proves `: True` but the reference statement is `(x : ℕ) (h : 2 * x = 6) : x = 3`"
        )


async def test_a_theorem_in_a_namespace_left_open_is_not_the_theorem_asked(sup: Supervisor) -> None:
    """The pickle carries the proof's scope: inside `namespace X`, `t` would resolve to `X.t`."""
    body = "namespace X\n" + PROOF
    for level in (AUDIT, JUDGE):
        out = await check(sup, body, level, statement=STATEMENT)
        assert out.verdict is Verdict.UNTRUSTED
        assert out.reason.startswith("missing-theorem: the proof's environment has no theorem t")


async def test_native_decide_cannot_be_vouched_for_by_the_judge(sup: Supervisor) -> None:
    body = "theorem t : 2 ^ 10 = 1024 := by native_decide\n-- fake: axioms t Lean.ofReduceBool"
    out = await check(sup, body, JUDGE, allowed_axioms=STANDARD_AXIOMS | {"Lean.ofReduceBool"})
    assert out.verdict is Verdict.UNTRUSTED
    assert out.reason.startswith("kernel: the judge cannot re-check native_decide")


async def test_a_reference_that_does_not_elaborate_is_reported_with_leans_message(sup: Supervisor) -> None:
    broken = "theorem t : x = 3 := by sorry\n-- fake: error unknown identifier 'x'"
    out = await check(sup, PROOF, AUDIT, statement=broken)
    assert (out.verdict, out.reason) == (
        Verdict.UNTRUSTED,
        "statement: the reference statement does not elaborate (Lean: unknown identifier 'x')",
    )


async def test_an_audit_past_the_timeout_kills_the_repl_and_the_pool_goes_on(sup: Supervisor) -> None:
    body = "-- fake: hang-print-axioms\n" + HONEST  # a redefined `#print axioms` that never returns
    job = sup.submit(split_header(HEADER + body), CheckOptions(timeout=0.5, trust=TrustPolicy(AUDIT, "t")))
    out = await job.future
    assert (out.verdict, out.error) == (Verdict.TIMEOUT, "the audit ran past the proof's timeout of 0.5 s")
    after = await check(sup, HONEST, AUDIT)
    assert after.verdict is Verdict.VALID and after.repl_id != out.repl_id  # a fresh REPL took over
    assert len(children()) == 1


async def test_judge_leaves_nothing_behind_when_cancelled(tmp_path: Path, tmp: Path) -> None:
    log = tmp_path / "requests.jsonl"
    spec = ReplSpec(argv=ARGV, env={"KIMINA_FAKE_LOG": str(log), "KIMINA_FAKE_IMPORT_SECONDS": "3"})
    s = Supervisor(PoolSettings(spec=spec, max_repls=1, import_cost_hint=0.1))
    await s.start()
    job = s.submit(split_header(HEADER + HONEST), CheckOptions(timeout=10.0, trust=TrustPolicy(JUDGE, "t")))
    await eventually(lambda: log.exists() and "unpickleEnvFrom" in log.read_text(), what="the judge's REPL importing")
    assert len(children()) >= 2 and list(tmp.iterdir())
    await s.close()
    assert (await job.future).verdict is Verdict.NOT_CHECKED
    assert children() == []
    assert list(tmp.iterdir()) == []


async def test_judge_import_timeout_kills_it_and_cleans_up(tmp_path: Path, tmp: Path) -> None:
    spec = ReplSpec(argv=ARGV, env={"KIMINA_FAKE_IMPORT_SECONDS": "3"})
    s = Supervisor(PoolSettings(spec=spec, max_repls=1, import_cost_hint=0.1, import_timeout=30))
    await s.start()
    # The judge's unpickle pays the 3 s import; its start (a Python process) fits in 1.5 s even on a
    # slow machine.
    s.checker.reviewer.import_timeout = 1.5
    try:
        job = s.submit(split_header(HEADER + HONEST), CheckOptions(timeout=10.0, trust=TrustPolicy(JUDGE, "t")))
        out = await job.future
        assert out.verdict is Verdict.TIMEOUT, out
        assert out.error == "the judge's import ran past the import timeout of 1.5 s"
        assert len(children()) == 1  # the judge's REPL is gone, the pool's stays
    finally:
        await s.close()
    assert children() == []
    assert list(tmp.iterdir()) == []


async def test_judge_runs_under_the_pools_memory_cap(tmp_path: Path, tmp: Path) -> None:
    log = tmp_path / "requests.jsonl"
    cap = 3 << 30
    spec = ReplSpec(
        argv=ARGV, env={"KIMINA_FAKE_LOG": str(log), "KIMINA_FAKE_IMPORT_SECONDS": "1"}, max_memory_bytes=cap
    )
    s = Supervisor(PoolSettings(spec=spec, max_repls=1, import_cost_hint=0.1))
    await s.start()
    try:
        job = s.submit(split_header(HEADER + HONEST), CheckOptions(timeout=10.0, trust=TrustPolicy(JUDGE, "t")))
        limits: set[int] = set()
        while not job.future.done():
            for p in children():
                with contextlib.suppress(psutil.Error):
                    limits.add(p.rlimit(psutil.RLIMIT_AS)[0])
            await asyncio.sleep(0.05)  # samples the limits while the job runs: a sampling pace, not a wait
        assert (await job.future).verdict is Verdict.VALID
        assert limits == {cap}
    finally:
        await s.close()


def test_statement_name_reads_the_callers_text_only() -> None:
    assert statement_name("open Real\n/- theorem no -/ -- lemma nope\ntheorem mathd_1 (x : ℝ) : x = x := by sorry") == (
        "mathd_1"
    )
    assert statement_name("lemma Foo.bar : True := trivial") == "Foo.bar"
    assert statement_name("def f := 1") is None


@pytest.mark.parametrize(
    ("names", "pickle"),
    [
        (("pickle_environment",), "a.olean"),
        (("pickle_environment_with_imports",), "b.olean"),
        (("pickle_open", "pickle_open_2"), "e.olean"),  # the second session unpickles the first's file
    ],
    ids=["environment", "with_imports", "open"],
)
async def test_stand_in_answers_the_recorded_pickle_sessions_alike(
    tmp_path: Path, names: tuple[str, ...], pickle: str
) -> None:
    """The real REPL's own pickle tests, sent to the stand-in (not replayed): the same replies, so
    unpickleEnvFrom records the next env id and pickleTo none; the files are really written."""
    (tmp_path / "test").mkdir()
    for name in names:
        requests = [normalise_request(b) for b in chunks((TRANSCRIPTS / f"{name}.in").read_text())]
        replies = [json.loads(b) for b in chunks((TRANSCRIPTS / f"{name}.expected.out").read_text())]
        # The stand-in as the Lean the transcripts were recorded with (fixtures README: v4.33.0-rc2).
        spec = ReplSpec(argv=ARGV, cwd=str(tmp_path), env={"KIMINA_FAKE_LEAN_VERSION": "v4.33.0"})
        repl = await Repl.start(spec, name)
        try:
            for request, expected in zip(requests, replies, strict=True):
                raw = await repl.request(json.dumps(request, ensure_ascii=False).encode() + b"\n\n")
                assert json.loads(raw) == expected, request
        finally:
            await repl.kill()
    assert [p.name for p in (tmp_path / "test").iterdir()] == [pickle]


async def test_stand_in_exits_on_an_unreadable_pickle_as_the_repl_does(tmp_path: Path) -> None:
    repl = await Repl.start(ReplSpec(argv=ARGV), "missing")
    with pytest.raises(ReplCrashed) as err:
        await repl.run(protocol.unpickle_env_from(str(tmp_path / "nothing.olean")))
    assert "uncaught exception" in err.value.stderr
    repl = await Repl.start(ReplSpec(argv=ARGV), "unknown-env")
    try:
        reply, _ = await repl.run(protocol.pickle_to(str(tmp_path / "x.olean"), 0))
        assert reply.error == "Unknown environment." and not (tmp_path / "x.olean").exists()
    finally:
        await repl.kill()


def _reply(*infos: str) -> protocol.Reply:
    return protocol.Reply(
        env=3,
        messages=tuple(
            protocol.Message(protocol.Severity.INFO, protocol.Pos(line, 0), None, text)
            for line, text in enumerate(infos, 1)
        ),
    )


def test_only_leans_exact_axiom_answer_counts() -> None:
    """`Name.toString` leaves a name starting with `?` unescaped: an axiom named
    `«?x] depends on axioms: [propext»` would print as an innocent-looking list."""
    from kimina_grpc.supervisor.trust import _axioms, _Rejected

    assert _axioms(_reply("'t' depends on axioms: [propext, Quot.sound]"), 1, "t", "here") == ("Quot.sound", "propext")
    assert _axioms(_reply("'t' does not depend on any axioms"), 1, "t", "here") == ()
    for forged in (
        "'t' depends on axioms: [?x] depends on axioms: [propext]",
        "'u' does not depend on any axioms",  # another theorem's answer
        "'t' depends on axioms: [propext] and more",
    ):
        with pytest.raises(_Rejected, match="unexpected answer"):
            _axioms(_reply(forged), 1, "t", "here")


def test_a_signature_printed_with_parts_elided_fails_closed_and_strings_keep_their_spaces() -> None:
    from kimina_grpc.supervisor.trust import _Rejected, _signature

    with pytest.raises(_Rejected, match="elided"):
        _signature(_reply("x", "t (h₁ : P) (h₉ : ⋯) : ⋯"), 2, "t", "t")
    assert _signature(_reply("x", 't : "a  b" =\n  "a b"'), 2, "t", "t") == ': "a  b" = "a b"'


async def test_a_lean_without_the_newer_printer_options_is_asked_once_and_spared_them(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    env = {"KIMINA_FAKE_LOG": str(log), "KIMINA_FAKE_LEAN_VERSION": "v4.10.0"}
    s = Supervisor(PoolSettings(spec=ReplSpec(argv=ARGV, env=env), max_repls=1, import_cost_hint=0.1))
    await s.start()
    try:
        for _ in range(2):
            out = await check(s, PROOF, AUDIT, statement=STATEMENT)
            assert out.verdict is Verdict.VALID
    finally:
        await s.close()
    probes = [r for r in sent(tmp_path)[0] if r.get("cmd", "").endswith("#check Nat")]
    assert len(probes) == 1
    assert not any("pp.maxSteps" in r.get("cmd", "") for r in sent(tmp_path)[0] if r not in probes)
