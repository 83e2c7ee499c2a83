"""Reading what Lean prints to the trust review's queries (`#print axioms`, `#check`): pure text in,
a value or a `Rejected` out. Grounded in Lean's sources, quoted where a rule comes from.

- `#print axioms NAME` (`Lean/Elab/Print.lean`, `printAxiomsOf`) answers exactly
  `'{constName}' does not depend on any axioms` or `'{constName}' depends on axioms: {list}`. The
  name is `Name.toString`, which does not escape `'` (`foo'`, `h₀'` are ordinary names): it is read
  from the fixed suffix and compared with the name asked, never cut at the first quote. The list is
  `MessageData.ofList` (`sbracket (joinSep xs ("," ++ Format.line))`) rendered by the REPL at width
  120 (`REPL/JSON.lean`), so a long answer wraps after each comma with one space of indent
  (`[propext,\\n Classical.choice,\\n Quot.sound]`): items are split on `,\\s*`.
- From Lean v4.22 to v4.29 (lean4 PR #8174, reverted by #13117) `#print axioms` throws in a file with
  a `module` header: the audit says so instead of calling the theorem missing.
"""

from __future__ import annotations

import re

from kimina_grpc.repl import Reply, Severity

# Axiom names are plain dotted names: one whose printed form could imitate the list (`Name.toString`
# leaves a name starting with `?` unescaped: `«?x] depends on axioms: [propext»`) cannot pass.
_AXIOM_NAME = r"[^\W\d][\w'!?]*(?:\.[^\W\d][\w'!?]*)*"
_LIST = re.compile(rf"\[(?P<list>{_AXIOM_NAME}(?:,\s*{_AXIOM_NAME})*)\]")
_DEPENDS = "' depends on axioms: "
_INDEPENDENT = "' does not depend on any axioms"
MODULE_REFUSAL = "cannot use `#print axioms` in a `module`"
"""The start of Lean's error for `#print axioms` in a module file (v4.22 to v4.29)."""
ELIDED = "⋯"


class Rejected(Exception):
    """The proof does not meet the trust level: the reason names the rule and the culprit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def at_line(reply: Reply, line: int) -> list[tuple[Severity, str]]:
    """Messages of one line of the command (each query has a line of its own)."""
    return [(m.severity, m.data) for m in reply.messages if m.pos.line == line]


def axioms_answer(reply: Reply, line: int, theorem: str, where: str) -> tuple[str, ...]:
    """The axioms `#print axioms _root_.THEOREM` on `line` lists, sorted; the theorem must exist."""
    found = at_line(reply, line)
    errors = [text for sev, text in found if sev is Severity.ERROR]
    if errors and MODULE_REFUSAL in errors[0]:
        raise Rejected(
            f"module: this Lean refuses `#print axioms` in a file with a `module` header (Lean v4.22 to v4.29),"
            f" so the axioms of {theorem} cannot be audited; check it without the `module` line, or at trust"
            f" level check (Lean: {errors[0][:300]})"
        )
    if errors:
        raise Rejected(f"missing-theorem: {where} has no theorem {theorem} (Lean: {errors[0][:300]})")
    if len(found) != 1:
        raise Rejected(f"audit: {len(found)} answers to #print axioms {theorem} in {where}, not one")
    text = found[0][1].strip()
    listed = parse_axioms(text, theorem)
    if listed is None:
        raise Rejected(f"audit: unexpected answer to #print axioms {theorem} in {where}: {text[:300]}")
    return listed


def parse_axioms(text: str, theorem: str) -> tuple[str, ...] | None:
    """The axioms in Lean's answer about `theorem` (None: not Lean's answer about it). The name is
    the text between the leading quote and the fixed suffix, compared whole with the one asked."""
    for name in (theorem, f"_root_.{theorem}"):
        head = f"'{name}"
        if text == head + _INDEPENDENT:
            return ()
        if text.startswith(head + _DEPENDS):
            m = _LIST.fullmatch(text[len(head + _DEPENDS) :])
            if m is not None:
                return tuple(sorted(set(re.split(r",\s*", m.group("list")))))
    return None


def signature(reply: Reply, line: int, name: str, what: str, first: int | None = None) -> str:
    """The signature `#check _root_.NAME` printed on `line` without the name (universe parameters,
    binders, type), whitespace-normalised; an error on lines `first`..`line` (the reference's own
    lines) means the statement does not elaborate."""
    errors = [m.data for m in reply.messages if (first or line) <= m.pos.line <= line and m.severity is Severity.ERROR]
    if errors:
        raise Rejected(f"statement: {what} does not elaborate (Lean: {errors[0][:300]})")
    head = re.compile(rf"(?:_root_\.)?{re.escape(name)}(?=[\s.:]|$)", re.S)
    infos = [m for sev, text in at_line(reply, line) if sev is Severity.INFO and (m := head.match(text))]
    if len(infos) != 1:
        raise Rejected(f"statement: no single signature of {name} printed for {what}")
    printed = collapse(infos[0].string[infos[0].end() :])
    if ELIDED in printed:
        raise Rejected(f"statement: the signature of {what} was printed with parts elided ({ELIDED})")
    return printed


def collapse(text: str) -> str:
    """Whitespace runs as one space (where the printer breaks a line depends on the name's length),
    except inside string literals and «escaped names», which are atoms: `"a  b"` is not `"a b"`."""
    out: list[str] = []
    quote: str | None = None  # the closing character while inside an atom
    i = 0
    while i < len(text):
        c = text[i]
        if quote is not None:
            out.append(c)
            if c == "\\" and quote == '"' and i + 1 < len(text):
                out.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c.isspace():
            if out and out[-1] != " ":
                out.append(" ")
        else:
            out.append(c)
            quote = {'"': '"', "«": "»"}.get(c)
        i += 1
    return "".join(out).strip()
