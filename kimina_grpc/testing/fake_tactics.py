"""The stand-in REPL's tactic mode: `{"tactic": T, "proofState": N}` (leanprover-community/repl).

As the REPL does it (recorded in the REPL's own tactic-mode transcripts):
- every `sorry` of a command records a proof state, and so does every tactic run; they share one
  counter per process, from 0; every state stays addressable (branching is free);
- a tactic's reply is `{"sorries"?, "proofStatus", "proofState", "messages"?, "goals"}` in that
  order; `proofStatus` is "Completed" when no goal is left, "Incomplete: open goals remain" while
  goals are, "Incomplete: contains sorry" when none is left but a `sorry` (or Lean's error
  recovery) closed one;
- an unknown state is `{"message": "Unknown proof state."}`, recording nothing; a tactic that does
  not parse is `{"message": "Lean error:\\n<input>:1:1: unknown tactic"}`, recording nothing; a
  tactic that fails to elaborate records a state all the same: the error at 1:0-ish (the REPL says
  line 0, column 0), no goals left, "Incomplete: contains sorry";
- `sorry` as a tactic closes the main goal and records a state for it (`sorries: [{proofState, goal}]`).

The goal of a command's `sorry` is read from its declaration when the `sorry` ends one on that line
(`theorem t (p q : Prop) (h : p) : p ∧ q := by sorry` has "p q : Prop\\nh : p\\n⊢ p ∧ q", binders
as Lean prints them); otherwise "⊢ False".

It checks no Lean: a tactic does nothing to the goals (like `skip`) unless it says otherwise with
directive lines in its text (`-- fake: VERB ARGS`, each on a line of its own, as in command mode):

    goals G1 || G2 ..  the main goal is replaced by these (none: `goals` alone closes it); a goal
                       without "⊢" keeps the main goal's hypotheses and is its new target; `\\n` in
                       a goal is a line break
    when TARGET        the tactic fails ("tactic failed", as `error`) unless the main goal's target
                       (the text after "⊢") is TARGET: a tactic that applies to some goals only
    done               closes the main goal (what `exact h` does when it fits)
    error [TEXT]       the tactic fails to elaborate: TEXT (default "tactic failed") as an error at
                       line 0, column 0; no goals left; "Incomplete: contains sorry"
    parse-error [TEXT] the tactic does not parse: {"message": "Lean error:\\n<input>:1:1: TEXT"}
                       (default "unknown tactic"), no state recorded
    tactic-only        accepted here, as tactic mode accepts some proofs that checking the whole
                       file rejects (repl PR #90); in a command, the directive is an error
    kernel-reject [TEXT]  when no goal is left, the REPL's kernel check of the proof fails: status
                       "Error: kernel type check failed: TEXT" (default "(kernel) declaration type
                       mismatch"; newer REPLs check a completed proof); in a command, as command mode's
    sleep S, cpu S, hang, crash [CODE]   as in command mode
    alloc MB           allocate and touch MB MiB and keep it, as in command mode (a replay of the
                       tactic on a fresh REPL allocates it again)
    alloc-once MB PATH  like `alloc` if PATH does not exist, creating it: memory the REPL gathers
                       that is no proof state's (a fresh REPL replaying the tactic does not)

A state's goals are plain strings; `sorry`, `done` and the directives are all the stand-in knows.
Checking a whole command runs each `:= by` block that uses `goals`, `when` or `done` through the
same model (`check_blocks`): a failing `when` is an error there too, and goals left at the end are
"unsolved goals", as Lean says when a path that tactic mode left open is sent as a file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from kimina_grpc.testing.fake_messages import msg
from kimina_grpc.testing.fake_process import Memory, process_directive
from kimina_grpc.testing.fake_syntax import DIRECTIVE, SORRY

_BINDER = re.compile(r"[({\[⦃]\s*([^(){}\[\]⦃⦄]*?)\s*[)}\]⦄]")
_DECL = re.compile(
    r"(?:theorem|lemma|def|abbrev|instance|example)\s*([^\s:({\[]*)\s*((?:[({\[⦃][^(){}\[\]⦃⦄]*[)}\]⦄]\s*)*)"
    r":\s*(.+?)\s*:=\s*by\s*$"
)
TACTIC_ONLY_ERROR = "(kernel) declaration has metavariables"
"""What a command says of a `tactic-only` step: the whole-file check that tactic mode skipped."""


@dataclass(frozen=True)
class ProofState:
    goals: tuple[str, ...]
    sorry: bool = False
    """A sorry (or error recovery) closed some goal on the way here."""


def sorry_goal(line: str, column: int) -> str:
    """The goal of a `sorry` at `column` of `line`, as Lean prints it, when the sorry is the whole
    proof of a declaration written on that line; "⊢ False" otherwise."""
    m = _DECL.search(line[:column])
    if m is None:
        return "⊢ False"
    hyps: list[str] = []
    for b in _BINDER.finditer(m.group(2)):
        names, sep, typ = b.group(1).partition(":")
        if not sep:  # an anonymous instance binder `[Foo]`
            hyps.append(f"inst✝ : {' '.join(names.split())}")
            continue
        hyps.append(f"{' '.join(names.split())} : {' '.join(typ.split())}")
    return "\n".join([*hyps, f"⊢ {' '.join(m.group(3).split())}"])


def command_directive(verb: str, line: int) -> dict[str, Any] | None:
    """The message a tactic-mode directive makes in a command (None: it makes none)."""
    return msg("error", line, 0, TACTIC_ONLY_ERROR) if verb == "tactic-only" else None


def _target(goal: str) -> str:
    return goal.rpartition("⊢ ")[2]


def _with_context(main: str, goal: str) -> str:
    goal = goal.replace("\\n", "\n")
    if "⊢" in goal:
        return goal
    context = main.rpartition("⊢ ")[0]
    return f"{context}⊢ {goal}"


class TacticMode:
    """The proof states of one REPL process."""

    def __init__(self, memory: Memory | None = None) -> None:
        self.states: list[ProofState | None] = []
        self.memory = memory or Memory()
        """What the process holds (a tactic's `alloc`)."""

    def record(self, goal: str | None) -> int:
        """A new proof state with one goal (a command's sorry); its id."""
        self.states.append(ProofState((goal,)) if goal is not None else None)
        return len(self.states) - 1

    def _add(self, state: ProofState) -> int:
        self.states.append(state)
        return len(self.states) - 1

    def answer(self, tactic: str, proof_state: int, *, effects: bool = True) -> dict[str, Any]:
        if not 0 <= proof_state < len(self.states) or (start := self.states[proof_state]) is None:
            return {"message": "Unknown proof state."}
        goals = list(start.goals)
        sorry = start.sorry
        sorries: list[dict[str, Any]] = []
        messages: list[dict[str, Any]] = []
        replaced: list[str] | None = None
        kernel = ""
        code_lines = [ln for ln in tactic.split("\n") if not ln.lstrip().startswith("--")]
        code = "\n".join(code_lines).strip()
        if not code and not tactic.strip():
            return {"message": "Lean error:\n<input>:1:1: unexpected end of input"}
        for line in tactic.split("\n"):
            d = DIRECTIVE.match(line)
            if d is None:
                continue
            verb, arg = d.group(1), d.group(2)
            if not effects and verb in ("sleep", "cpu", "hang", "crash", "error"):
                continue  # a command's own directive loop does these
            if process_directive(verb, arg):
                pass
            elif verb == "alloc-once" and effects:
                mb, _, path = arg.partition(" ")
                if not os.path.exists(path.strip()):
                    open(path.strip(), "w").close()
                    self.memory.hold(int(float(mb)))
            elif verb == "alloc" and effects:
                self.memory.hold(int(float(arg)))
            elif verb == "parse-error":
                return {"message": f"Lean error:\n<input>:1:1: {arg or 'unknown tactic'}"}
            elif verb == "when" and (not goals or _target(goals[0]) != " ".join(arg.split())):
                messages.append(_error(f"tactic failed, the goal is not {arg}"))
            elif verb == "error":
                messages.append(_error(arg or "tactic failed"))
            elif verb == "goals" and goals:
                replaced = [_with_context(goals[0], g.strip()) for g in arg.split("||") if g.strip()]
            elif verb == "done" and goals:
                replaced = []
            elif verb == "kernel-reject":
                kernel = arg or "(kernel) declaration type mismatch"
        if messages:  # Lean's error recovery: the goals are admitted
            goals, sorry = [], True
        elif SORRY.fullmatch(code) and goals:
            sorries.append({"proofState": self._add(ProofState((goals[0],))), "goal": goals[0]})
            goals, sorry = goals[1:], True
        elif replaced is not None:
            goals = replaced + goals[1:]
        elif not goals and code:
            messages.append(_error("no goals to be proved"))
            sorry = True
        state = self._add(ProofState(tuple(goals), sorry))
        reply: dict[str, Any] = {}
        if sorries:
            reply["sorries"] = sorries
        reply["proofStatus"] = _status(goals, sorry)
        if kernel and reply["proofStatus"] == "Completed":
            reply["proofStatus"] = f"Error: kernel type check failed: {kernel}"
        reply["proofState"] = state
        if messages:
            reply["messages"] = messages
        reply["goals"] = goals
        return reply


def _status(goals: list[str], sorry: bool) -> str:
    if goals:
        return "Incomplete: open goals remain"
    return "Incomplete: contains sorry" if sorry else "Completed"


def _error(text: str) -> dict[str, Any]:
    return {"severity": "error", "pos": {"line": 0, "column": 0}, "endPos": {"line": 0, "column": 0}, "data": text}


_TACTIC_VERBS = frozenset({"goals", "when", "done"})


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def check_blocks(lines: list[str], first: int) -> list[dict[str, Any]]:
    """What checking a whole command says of its `:= by` blocks whose tactics use the tactic-mode
    directives (`goals`, `when`, `done`): each block is run through the tactic model from its
    declaration's goal, as Lean elaborates the tactics; a `when` that does not hold is an error on
    its tactic's line, goals left at the end are Lean's "unsolved goals" error on the declaration's
    line. Blocks without those directives are left to the command's own directives."""
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("by") or (goal := sorry_goal(line.rstrip(), len(line.rstrip()))) == "⊢ False":
            i += 1
            continue
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > _indent(line)):
            j += 1
        block = [(k, lines[k]) for k in range(i + 1, j) if lines[k].strip()]
        decl, i = i, j
        verbs = {d.group(1) for _, ln in block if (d := DIRECTIVE.match(ln))}
        code = [(k, ln) for k, ln in block if not ln.lstrip().startswith("--")]
        if not verbs & _TACTIC_VERBS or not code:
            continue
        column = min(_indent(ln) for _, ln in code)
        tactics: list[tuple[int, list[str]]] = []
        for k, ln in block:
            if (not ln.lstrip().startswith("--") and _indent(ln) == column) or not tactics:
                tactics.append((k, []))
            tactics[-1][1].append(ln[column:] if ln[:column].isspace() else ln.strip())
        model = TacticMode()
        state = model.record(goal)
        reply: dict[str, Any] = {"goals": [goal]}
        for k, text in tactics:
            reply = model.answer("\n".join(text), state, effects=False)
            if "proofState" not in reply:
                break
            state = reply["proofState"]
            out.extend(_at(m, k + first, column) for m in reply.get("messages", []))
        if reply.get("goals"):
            data = "unsolved goals\n" + "\n\n".join(reply["goals"])
            out.append(_at(_error(data), decl + first, _indent(lines[decl])))
    return out


def _at(message: dict[str, Any], line: int, column: int) -> dict[str, Any]:
    return {**message, "pos": {"line": line, "column": column}, "endPos": {"line": line, "column": column + 1}}
