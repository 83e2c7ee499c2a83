"""Acceptance cases with the real Lean REPL for the trust rules of issues 23 and 31: a self-declared
`propext` under `prelude`, and honest proofs whose theorem names real Lean prints in ways the audit
must read (primed, dotted, long enough to wrap the axiom list, under `pp.universes true`).

Skipped without a Lean workspace, like test_exploits.py (`make test-real-lean`). Each case says the
Lean versions its expectation holds for, as read from Lean's and the REPL's sources (not run here:
the development machine has no Lean). A failure is a finding about the trust rules or a version.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from kimina_grpc.repl import ReplSpec, Verdict, split_header
from kimina_grpc.settings import Settings
from kimina_grpc.supervisor import CheckOptions, PoolSettings, Supervisor
from kimina_grpc.supervisor.jobs import STANDARD_AXIOMS, TrustLevel, TrustPolicy


def _workspace() -> Path | None:
    value = os.environ.get("LEAN_SERVER_WORKSPACE")
    if not value:
        return None
    path = Path(value)
    return path if (path / "repl/.lake/build/bin/repl").exists() and (path / "mathlib4").is_dir() else None


pytestmark = [
    pytest.mark.skipif(
        _workspace() is None,
        reason="no real Lean workspace: set LEAN_SERVER_WORKSPACE to one made by tools/install_lean.sh "
        "(repl/ and mathlib4/ built), then run `make test-real-lean`",
    ),
    pytest.mark.asyncio(loop_scope="module"),
]

V, X, U = Verdict.VALID, Verdict.INVALID, Verdict.UNTRUSTED  # X: INVALID
MATHLIB = "import Mathlib\n\n"
ALL = "every supported version (REPL v4.9 on)"
LONG = "imo_2019_problem_1_functional_equation_over_the_integers_solution"  # 65 characters: the list wraps


@dataclass(frozen=True)
class Case:
    name: str
    code: str
    """The whole file, header included."""
    expected: tuple[Verdict, Verdict, Verdict]
    """At check, audit, judge."""
    versions: str
    """The Lean versions the expectation holds for."""
    theorem: str = "t"
    statement: str | None = None
    allowed: frozenset[str] = field(default=STANDARD_AXIOMS)


CASES = [
    Case(
        "prelude-self-declared-propext",
        # Init.Tactics does not import Init/Core.lean, where propext is declared: the name is free.
        "prelude\nimport Init.Tactics\n\naxiom propext : False\n\n"
        "theorem t (n : Nat) (h : n + 2 = 5) : n = 4 := propext.elim",
        (V, U, U),  # `#print axioms` says [propext]; a `prelude` file is refused at audit and judge
        ALL,
        statement="theorem t (n : Nat) (h : n + 2 = 5) : n = 4 := by sorry",
    ),
    Case(
        "self-declared-propext-without-prelude",
        MATHLIB + "axiom propext : False\n\ntheorem t (n : ℕ) (h : n + 2 = 5) : n = 4 := propext.elim",
        (X, X, X),  # Init declares propext: "'propext' has already been declared"
        ALL,
        statement="theorem t (n : ℕ) (h : n + 2 = 5) : n = 4 := by sorry",
    ),
    Case(
        "primed-name",
        MATHLIB + "theorem foo' (x : ℕ) (h : 2 * x = 6) : x = 3 := by omega",
        (V, V, V),  # `Name.toString` prints 'foo'' (the quote unescaped)
        ALL,
        theorem="foo'",
        statement="theorem foo' (x : ℕ) (h : 2 * x = 6) : x = 3 := by sorry",
    ),
    Case(
        "subscript-primed-name",
        MATHLIB + "theorem h₀' (p : Prop) : p ∨ ¬p := Classical.em p",
        (V, V, V),
        ALL,
        theorem="h₀'",
        statement="theorem h₀' (p : Prop) : p ∨ ¬p := by sorry",
    ),
    Case(
        "dotted-name",
        MATHLIB + "theorem Nat.kimina_dotted (n : ℕ) : succ n ≠ 0 := Nat.succ_ne_zero n",
        (V, V, V),  # `succ` is `Nat.succ` in the reference too: it is declared as `Nat.kimina_dotted_kimina<hex>`
        ALL,
        theorem="Nat.kimina_dotted",
        statement="theorem Nat.kimina_dotted (n : ℕ) : succ n ≠ 0 := by sorry",
    ),
    Case(
        "dotted-name-weaker",
        MATHLIB + "theorem Nat.kimina_dotted (n : ℕ) : succ n ≠ 1 ∨ True := Or.inr trivial",
        (V, U, U),
        ALL,
        theorem="Nat.kimina_dotted",
        statement="theorem Nat.kimina_dotted (n : ℕ) : succ n ≠ 0 := by sorry",
    ),
    Case(
        "long-name-wrapped-axioms",
        MATHLIB + f"theorem {LONG} (p : Prop) : p ∨ ¬p := Classical.em p",
        (V, V, V),  # '…' depends on axioms: [propext,\n Classical.choice,\n Quot.sound] at width 120
        ALL,
        theorem=LONG,
        statement=f"theorem {LONG} (p : Prop) : p ∨ ¬p := by sorry",
    ),
    Case(
        "pp-universes-true",
        MATHLIB + "set_option pp.universes true\n\ntheorem t (p : Prop) : p ∨ ¬p := Classical.em p",
        (V, V, V),  # where `#print axioms` prints names as constants, `Classical.choice.{u}` without our option
        ALL,
        statement="theorem t (p : Prop) : p ∨ ¬p := by sorry",
    ),
]
# Not here: a `module` file (`#print axioms` refused from v4.22 to v4.29; a module cannot import the
# non-module Mathlib of those versions), and a proof whose kernel check needs more than the default
# 200000 heartbeats (no small witness whose kernel cost is stable across versions): both are covered
# with the stand-in in tests/test_trust_integrity.py.


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sup() -> AsyncIterator[Supervisor]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    argv, cwd = settings.repl_argv()
    spec = ReplSpec(argv=argv, cwd=cwd, max_memory_bytes=settings.max_repl_mem)
    s = Supervisor(PoolSettings(spec=spec, max_repls=1, import_timeout=600))
    await s.start()
    yield s
    await s.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("level", list(TrustLevel), ids=[lv.name.lower() for lv in TrustLevel])
async def test_trust_names(sup: Supervisor, case: Case, level: TrustLevel) -> None:
    trust = None if level is TrustLevel.CHECK else TrustPolicy(level, case.theorem, case.statement, case.allowed)
    outcome = await sup.submit(split_header(case.code), CheckOptions(timeout=300, trust=trust)).future
    expected = case.expected[level.value - 1]
    assert outcome.verdict is expected, (case.versions, outcome.verdict, outcome.reason, outcome.error)
