"""Trust levels against what real Lean prints and what a proof can declare (issues 23 and 31), with
the stand-in REPL: primed, dotted and long theorem names, `pp.universes`, `module` files, the judge's
kernel heartbeats, a self-declared `propext` under `prelude`, an allowed axiom the proof declared, and
a shared REPL poisoned by another caller's proof."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kimina_grpc.repl import ReplSpec, Verdict, protocol, split_header
from kimina_grpc.supervisor import CheckOptions, PoolSettings, Supervisor
from kimina_grpc.supervisor.jobs import STANDARD_AXIOMS, Outcome, TrustPolicy
from kimina_grpc.supervisor.trust import _axioms as axioms_answer
from kimina_grpc.supervisor.trust import _Rejected as Rejected

from .helpers.pool import ARGV
from .helpers.processes import children
from .helpers.trust import AUDIT, CHECK, JUDGE, check, sent

LEVELS = (CHECK, AUDIT, JUDGE)


async def levels(sup: Supervisor, body: str, **policy: Any) -> list[Outcome]:
    return [await check(sup, body, level, **policy) for level in LEVELS]


def _reply(text: str) -> protocol.Reply:
    return protocol.Reply(env=3, messages=(protocol.Message(protocol.Severity.INFO, protocol.Pos(1, 0), None, text),))


# --- issue 31.1: `Name.toString` does not escape `'` ------------------------------------------------


def test_a_primed_name_is_read_from_the_fixed_suffix() -> None:
    # Exactly what Lean prints (Elab/Print.lean: m!"'{constName}' does not depend on any axioms").
    assert axioms_answer(_reply("'foo'' does not depend on any axioms"), 1, "foo'", "here") == ()
    assert axioms_answer(_reply("'h₀'' depends on axioms: [propext]"), 1, "h₀'", "here") == ("propext",)
    assert axioms_answer(_reply("'a'b'' depends on axioms: [Quot.sound]"), 1, "a'b'", "here") == ("Quot.sound",)
    for other in ("'foo' does not depend on any axioms", "'foo''' does not depend on any axioms"):
        with pytest.raises(Rejected, match="unexpected answer"):
            axioms_answer(_reply(other), 1, "foo'", "here")


async def test_a_primed_theorem_is_valid_at_audit_and_judge(sup: Supervisor) -> None:
    body = "theorem foo' (x : ℕ) (h : 2 * x = 6) : x = 3 := by omega\n-- fake: axioms foo' propext"
    statement = "theorem foo' (x : ℕ) (h : 2 * x = 6) : x = 3 := by sorry"
    outs = await levels(sup, body, theorem="foo'", statement=statement)
    assert [(o.verdict, o.reason) for o in outs] == [(Verdict.VALID, "")] * 3
    assert outs[2].axioms == (("foo'", ("propext",)),)


# --- issue 31.2: a long answer wraps at the REPL's width of 120 ---------------------------------------

LONG = "imo_2019_problem_1_functional_equation_over_the_integers_solution"  # 65 characters


def test_a_wrapped_axiom_list_is_read() -> None:
    text = f"'{LONG}' depends on axioms: [propext,\n Classical.choice,\n Quot.sound]"  # MessageData.ofList
    assert axioms_answer(_reply(text), 1, LONG, "here") == ("Classical.choice", "Quot.sound", "propext")
    with pytest.raises(Rejected, match="unexpected answer"):  # still only names between the commas
        axioms_answer(_reply(f"'{LONG}' depends on axioms: [propext,\n ?x]"), 1, LONG, "here")


async def test_a_long_theorem_name_with_the_standard_axioms_is_valid(sup: Supervisor) -> None:
    body = f"theorem {LONG} : 1 + 1 = 2 := by simp\n-- fake: axioms {LONG} propext Classical.choice Quot.sound"
    outs = await levels(sup, body, theorem=LONG)
    assert [(o.verdict, o.reason) for o in outs] == [(Verdict.VALID, "")] * 3
    assert outs[1].axioms == ((LONG, ("Classical.choice", "Quot.sound", "propext")),)


async def test_a_proofs_pp_universes_does_not_change_the_axioms_names(tmp_path: Path) -> None:
    """From v4.30 `#print axioms` prints names as constants: `pp.universes true` would show
    `Classical.choice.{u}`; the query sets it false."""
    env = {"KIMINA_FAKE_LEAN_VERSION": "v4.30.0"}
    s = Supervisor(PoolSettings(spec=ReplSpec(argv=ARGV, env=env), max_repls=1, import_cost_hint=0.1))
    await s.start()
    try:
        body = "set_option pp.universes true\ntheorem t : 1 + 1 = 2 := by simp\n-- fake: axioms t Classical.choice"
        outs = await levels(s, body)
    finally:
        await s.close()
    assert [(o.verdict, o.reason) for o in outs] == [(Verdict.VALID, "")] * 3
    assert outs[2].axioms == (("t", ("Classical.choice",)),)


# --- issue 31.3: a dotted theorem name opens its namespace --------------------------------------------


async def test_a_dotted_theorem_name_opens_its_namespace_for_the_reference(sup: Supervisor) -> None:
    statement = "theorem Nat.t (n : ℕ) : succ n ≠ 0 := by sorry"  # `succ` is `Nat.succ` there
    body = "theorem Nat.t (n : ℕ) : succ n ≠ 0 := Nat.succ_ne_zero n"
    outs = await levels(sup, body, theorem="Nat.t", statement=statement)
    assert [(o.verdict, o.reason) for o in outs] == [(Verdict.VALID, "")] * 3
    weaker = await check(sup, body.replace("≠ 0", "≠ 1"), JUDGE, theorem="Nat.t", statement=statement)
    assert weaker.verdict is Verdict.UNTRUSTED
    assert weaker.reason == (
        "statement: Nat.t proves `(n : ℕ) : Nat.succ n ≠ 1` but the reference statement is `(n : ℕ) : Nat.succ n ≠ 0`"
    )


# --- issue 31.4: the judge's replay runs under the default kernel heartbeats --------------------------


async def test_a_kernel_heartbeat_timeout_on_the_judges_replay_is_a_timeout(sup: Supervisor) -> None:
    body = "set_option maxHeartbeats 400000 in\ntheorem t : 1 + 1 = 2 := by decide\n-- fake: kernel-heartbeats 300000"
    outs = await levels(sup, body)
    assert [o.verdict for o in outs] == [Verdict.VALID, Verdict.VALID, Verdict.TIMEOUT]
    assert outs[2].reason == ""
    assert outs[2].error.startswith("the judge's kernel re-check ran out of heartbeats")
    assert "(kernel) deterministic timeout" in outs[2].error
    # Under the default limit the proof's own check says so (Lean's message).
    plain = await check(sup, body.replace("set_option maxHeartbeats 400000 in\n", ""), CHECK)
    assert plain.verdict is Verdict.INVALID
    assert plain.reply is not None and plain.reply.messages[0].data == "(kernel) deterministic timeout"


# --- issue 31.6: `#print axioms` in a `module` (v4.22 to v4.29) ---------------------------------------


@pytest.mark.parametrize(("version", "verdict"), [("v4.22.0", Verdict.UNTRUSTED), ("v4.30.0", Verdict.VALID)])
async def test_a_module_file_says_the_audit_is_refused(tmp_path: Path, version: str, verdict: Verdict) -> None:
    env = {"KIMINA_FAKE_LEAN_VERSION": version}
    s = Supervisor(PoolSettings(spec=ReplSpec(argv=ARGV, env=env), max_repls=1, import_cost_hint=0.1))
    await s.start()
    try:
        code = "module\n\nimport Mathlib\n\ntheorem t : 1 + 1 = 2 := by simp"
        out = await s.submit(split_header(code), CheckOptions(timeout=10.0, trust=TrustPolicy(AUDIT, "t"))).future
    finally:
        await s.close()
    assert out.verdict is verdict, out
    if verdict is Verdict.UNTRUSTED:
        assert out.reason.startswith("module: this Lean refuses `#print axioms` in a file with a `module` header")
        assert "(Lean: cannot use `#print axioms` in a `module`; consider temporarily removing" in out.reason


# --- issue 23.1: an allowed axiom must be the axiom -------------------------------------------------

PRELUDE = "prelude\nimport Init.Tactics\n"
PROPEXT = (
    "axiom propext : False\ntheorem t (n : Nat) (h : n + 2 = 5) : n = 4 := propext.elim\n-- fake: axioms t propext"
)
PROPEXT_STATEMENT = "theorem t (n : Nat) (h : n + 2 = 5) : n = 4 := by sorry"


async def test_a_self_declared_propext_under_prelude_is_refused(sup: Supervisor, tmp_path: Path) -> None:
    outs = []
    for level in LEVELS:
        trust = None if level is CHECK else TrustPolicy(level, "t", PROPEXT_STATEMENT)
        job = sup.submit(split_header(PRELUDE + PROPEXT), CheckOptions(timeout=10.0, trust=trust))
        outs.append(await job.future)
    assert [o.verdict for o in outs] == [Verdict.VALID, Verdict.UNTRUSTED, Verdict.UNTRUSTED]
    for out in outs[1:]:
        assert out.reason.startswith("prelude: a `prelude` file chooses which of Lean's core modules it imports")
    # Refused before anything is asked: no audit command, no judge.
    asked = [r for repl in sent(tmp_path) for r in repl if "#print axioms" in r.get("cmd", "") or "pickleTo" in r]
    assert asked == []
    assert len(sent(tmp_path)) == 1  # no judge's REPL either
    # Without `prelude`, Init declares propext: Lean itself refuses the second one.
    again = await check(sup, PROPEXT, CHECK)
    assert again.verdict is Verdict.INVALID
    assert again.reply is not None and again.reply.messages[0].data == "'propext' has already been declared"


async def test_an_allowed_axiom_the_proof_declared_itself_is_not_the_axiom(sup: Supervisor) -> None:
    # A name no clean environment of the header has (as `Lean.trustCompiler` before Lean declared it).
    body = "axiom Foo.trusted : False\ntheorem t : 1 = 2 := Foo.trusted.elim\n-- fake: axioms t Foo.trusted"
    outs = await levels(sup, body, allowed_axioms=STANDARD_AXIOMS | {"Foo.trusted"})
    assert [o.verdict for o in outs] == [Verdict.VALID, Verdict.UNTRUSTED, Verdict.UNTRUSTED]
    for out in outs[1:]:
        assert out.reason == (
            "axioms: Foo.trusted is no constant of a clean environment of this header: it was declared by the"
            " proof (the proof's environment), not by Lean or the imports"
        )


# --- issue 23.2: the judge takes nothing from the shared REPL but the pickle --------------------------

VICTIM = "theorem victim : 1 = 2 := by rfl\n-- fake: error The rfl tactic failed"
VICTIM_STATEMENT = "theorem victim : 1 = 2 := by sorry"


@pytest.fixture
async def one_repl() -> AsyncIterator[Supervisor]:
    s = Supervisor(PoolSettings(spec=ReplSpec(argv=ARGV), max_repls=1, import_cost_hint=0.1))
    await s.start()
    yield s
    await s.close()
    assert children() == []


async def test_a_poisoned_shared_repl_cannot_make_a_wrong_proof_valid_at_judge(one_repl: Supervisor) -> None:
    policy = {"theorem": "victim", "statement": VICTIM_STATEMENT}
    clean = await check(one_repl, VICTIM, JUDGE, **policy)
    assert clean.verdict is Verdict.INVALID  # on a clean server
    # Another caller's proof at trust level check leaves code running in the warm REPL.
    poisoner = await check(one_repl, "-- fake: poison 1 = 2 => 1 = 1\ntheorem p : True := trivial", CHECK)
    assert poisoner.verdict is Verdict.VALID
    audit = await check(one_repl, VICTIM, AUDIT, **policy)
    assert audit.verdict is Verdict.VALID  # the audit's documented limit: it asks the shared REPL
    judged = await check(one_repl, VICTIM, JUDGE, **policy)
    assert judged.verdict is Verdict.UNTRUSTED
    # The pickle's constant is what the poisoned REPL made of it; the reference is the judge's own.
    assert judged.reason == "statement: victim proves `: 1 = 1` but the reference statement is `: 1 = 2`"


def test_the_reference_is_declared_under_its_own_name_with_the_callers_namespaces() -> None:
    from kimina_grpc.supervisor.audit import reference_command

    text, name = reference_command(
        "import Mathlib\nopen Nat\n-- theorem no\ntheorem Nat.t (n : ℕ) : succ n ≠ 0 := by", "_k1"
    )
    assert (text, name) == ("open Nat\n-- theorem no\ntheorem Nat.t_k1 (n : ℕ) : succ n ≠ 0 := by sorry", "Nat.t_k1")
    assert reference_command("theorem A.«b c».d : True := by", "_k1")[1] == "A.«b c».d_k1"
    assert reference_command("theorem «my thm» : True := by", "_k1")[1] == "«my thm_k1»"  # inside the guillemets
    assert reference_command("/- lemma x -/ theorem _root_.foo' : True := trivial", "_k1")[1] == "foo'_k1"
    with pytest.raises(Rejected, match="declares no theorem"):
        reference_command("def f := 1", "_k1")


@pytest.mark.parametrize(
    ("stderr", "verdict", "start"),
    [
        ("uncaught exception: (kernel) deterministic timeout", Verdict.TIMEOUT, "the judge's kernel re-check ran out"),
        ("uncaught exception: (kernel) deep recursion detected", Verdict.REPL_ERROR, "the judge's kernel re-check hit"),
        (
            "uncaught exception: (kernel) excessive memory consumption detected",
            Verdict.REPL_ERROR,
            "the judge's kernel re-check hit",
        ),
    ],
)
def test_the_kernels_resource_limits_on_the_judges_replay_are_no_rejection(
    stderr: str, verdict: Verdict, start: str
) -> None:
    """Lean's texts (`KernelException.toMessageData`): the kernel stopped, it did not reject."""
    from kimina_grpc.supervisor.audit import Failed, Review
    from kimina_grpc.supervisor.judge import _kernel_verdict

    review = Review.__new__(Review)
    review.found, review.policy = {}, TrustPolicy(JUDGE, "t")
    with pytest.raises(Failed) as failed:
        _kernel_verdict(review, stderr)
    assert failed.value.verdict is verdict and failed.value.error.startswith(start)
    assert failed.value.error.endswith(f"(Lean: {stderr})")
