"""The real-Lean acceptance suite's cases: exploit proofs, the verdict expected at each trust level,
and the Lean versions each expectation holds for (read by test_exploits.py here, and checked against
the stand-in's version switches by tests/test_lean_versions.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kimina_grpc.repl import Verdict
from kimina_grpc.supervisor.jobs import STANDARD_AXIOMS

V, S, U, INVALID = Verdict.VALID, Verdict.SORRY, Verdict.UNTRUSTED, Verdict.INVALID
Versions = tuple[tuple[int, int], tuple[int, int]]
"""[first, past-the-last) Lean (major, minor) an expectation holds for."""
SUPPORTED: Versions = ((4, 10), (99, 0))  # every version the installer takes (v4.10 on)
REPLAY: Versions = ((4, 10), (4, 30))  # the judge's unpickle re-checks each constant with the kernel
# `set_option warn.sorry false in ...`: from 4.22 it silences the warning; before, an unknown option.
WARN_SORRY = [("", (V, U, U), ((4, 22), (99, 0))), ("-before-4.22", (INVALID,) * 3, ((4, 10), (4, 22)))]
SORRY_FROM_CHARACTERS = (
    "open Lean Elab Tactic in\n"
    'elab "close_it" : tactic => do\n'
    "  let g ← getMainGoal\n"
    '  g.assign (mkApp2 (mkConst (.str .anonymous ("sorry" ++ "Ax")) [levelZero]) (← g.getType)'
    " (mkConst ``Bool.false))\n\n"
    "set_option warn.sorry false in\n"
    "theorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := by close_it"
)
WARN_SORRY_AX = "set_option warn.sorry false in\ntheorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := sorryAx _ false"
HEADER = "import Mathlib\n\n"
STATEMENT = "theorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := by sorry"
HONEST = "theorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := by omega"


@dataclass(frozen=True)
class Case:
    name: str
    body: str
    expected: tuple[Verdict, Verdict, Verdict]
    """At check, audit, judge."""
    statement: str | None = STATEMENT
    allowed: frozenset[str] = field(default=STANDARD_AXIOMS)
    versions: Versions = SUPPORTED

    def holds_for(self, version: tuple[int, int]) -> bool:
        return self.versions[0] <= version < self.versions[1]


CASES = [
    Case("honest", HONEST, (V, V, V)),
    Case("honest-no-statement", HONEST, (V, V, V), statement=None),
    Case(
        "native_decide-allowed",
        "theorem t : 2 ^ 10 = 1024 := by native_decide",
        (V, V, U),  # the judge's kernel replay cannot evaluate compiled code: it cannot vouch for it
        statement="theorem t : 2 ^ 10 = 1024 := by sorry",
        allowed=STANDARD_AXIOMS | {"Lean.ofReduceBool", "Lean.trustCompiler"},
        versions=REPLAY,
    ),
    Case(
        "native_decide",
        "theorem t : 2 ^ 10 = 1024 := by native_decide",
        (V, U, U),
        statement="theorem t : 2 ^ 10 = 1024 := by sorry",
    ),
    Case("axiom", "axiom cheat : False\n\ntheorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := cheat.elim", (V, U, U)),
    Case("exit", "#exit\n\n" + HONEST.replace("omega", "simp"), (V, U, U)),
    Case("sorry", "theorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := by sorry", (S, S, S)),
    Case("admit", "theorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := by admit", (S, S, S)),
    *(
        Case(f"warn.sorry-sorryAx{suffix}", WARN_SORRY_AX, expected, versions=versions)
        for suffix, expected, versions in WARN_SORRY
    ),
    *(
        Case(f"sorryAx-from-characters{suffix}", SORRY_FROM_CHARACTERS, expected, versions=versions)
        for suffix, expected, versions in WARN_SORRY
    ),
    Case(
        "skipKernelTC",
        "open Lean in\nset_option debug.skipKernelTC true in\n"
        "run_cmd Elab.Command.liftCoreM <| addDecl <| .thmDecl\n"
        "  { name := `t, levelParams := [], type := mkConst ``False, value := mkConst ``True.intro }",
        (V, V, U),  # the audit cannot see it; the judge's unpickle re-checks with the kernel
        statement="theorem t : False := by sorry",
        versions=REPLAY,
    ),
    Case("weaker-statement", "theorem t (x : ℕ) (h : 2 * x = 6) : x ≤ 3 := by omega", (V, U, U)),
    Case("renamed", "theorem t' (x : ℕ) (h : 2 * x = 6) : x = 3 := by omega", (V, U, U)),
    Case("theorem-as-axiom", "axiom t (x : ℕ) (h : 2 * x = 6) : x = 3", (V, U, U)),
    Case(
        "local-instance",
        "local instance : Add ℕ := ⟨fun _ _ => 5⟩\n\ntheorem t : (2 : ℕ) + 2 = 5 := rfl",
        (V, U, U),  # the reference is elaborated in the header's environment, without the instance
        statement="theorem t : (2 : ℕ) + 2 = 5 := by sorry",
    ),
    Case(
        "private-instance",
        "private instance instAddNat : Add ℕ := ⟨fun _ _ => 5⟩\n\ntheorem t : (2 : ℕ) + 2 = 5 := rfl",
        (V, U, U),  # printed with pp.privateNames: not the core instAddNat
        statement="theorem t : (2 : ℕ) + 2 = 5 := by sorry",
    ),
    Case(
        "namespace-fullNames-instance",
        "set_option pp.fullNames false\nnamespace X\n"
        "instance (priority := high) instAddNat : Add ℕ := ⟨fun _ _ => 5⟩\n\n"
        "theorem t : (2 : ℕ) + 2 = 5 := rfl",
        (V, U, U),  # `_root_.t` does not exist (it is X.t); pp.fullNames is set explicitly
        statement="theorem t : (2 : ℕ) + 2 = 5 := by sorry",
    ),
    Case(
        "variable-shadows-theorem",
        "theorem t : True := trivial\n\nvariable (t : ∀ (x : ℕ) (h : 2 * x = 6), x = 3)",
        (V, U, U),  # `#check @t` would show the variable; the check asks for the constant
    ),
    Case(
        "local-notation",
        'local notation:65 a " ＋ " b => a * b\n\ntheorem t : (2 : ℕ) ＋ 3 = 6 := rfl',
        (V, U, U),  # the reference text does not parse without the proof's notation: a mismatch either way
        statement="theorem t : (2 : ℕ) + 3 = 6 := by sorry",
    ),
    Case(
        "hijacked-print-axioms",
        "axiom cheat : False\n\ntheorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := cheat.elim\n\n"
        "open Lean Elab Command in\n"
        'elab (priority := high) "#print " "axioms " id:ident : command =>\n'
        "  logInfo m!\"'{id.getId}' depends on axioms: [propext, Classical.choice, Quot.sound]\"",
        (V, V, U),  # the audit's documented limit; the judge's environment has no such elaborator
    ),
]
