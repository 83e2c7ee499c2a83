"""The audit trust level and what the judge shares with it: the review's queries, how their answers
are checked, and the reference statement (see supervisor/trust.py for the rules)."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace

from kimina_grpc.repl import Repl, ReplCrashed, ReplSpec, Reply, Severity, protocol, split_header
from kimina_grpc.supervisor.answers import Rejected, at_line, axioms_answer, signature
from kimina_grpc.supervisor.jobs import TrustPolicy
from kimina_grpc.verdict import Verdict

SORRY_AXIOM = "sorryAx"
NATIVE_AXIOMS = frozenset({"Lean.ofReduceBool", "Lean.trustCompiler"})
"""What `native_decide` (and `decide +native`) rests on: the compiler's evaluation of Lean code."""
_DECLARES = re.compile(r"(?:^|\s)(?:theorem|lemma)\s+(?P<name>(?:«[^»\n]*»|[^\s:({\[⦃«])+)")


# Names printed in full, explicitly: the proof's own settings of these options (carried into the
# judge by the pickle) win over pp.all's defaults, and newer Lean prints `#print axioms`' names
# relative to the current namespace and `open`s otherwise.
_NAMES = "set_option pp.fullNames true in set_option pp.privateNames true in"
_AXIOMS_QUERY = f"{_NAMES} set_option pp.universes false in #print axioms"
_PRINTING = f"set_option pp.all true in {_NAMES}"
# Nothing elided: the printer stops after pp.maxSteps (5000) and prints the rest as `⋯`, which would
# make two long statements print alike. Newer options: used where the REPL's Lean knows them (see
# `Reviewer.printing`); a signature with `⋯` in it fails closed either way.
_EXHAUSTIVE = "set_option pp.maxSteps 1000000000 in set_option pp.deepTerms true in set_option pp.proofs true in"


def _blank_comments(text: str) -> str:
    """`text` with its comments replaced by spaces (newlines kept): positions stay those of `text`."""
    return re.sub(r"/-.*?-/|--[^\n]*", lambda m: re.sub(r"[^\n]", " ", m.group()), text, flags=re.S)


def statement_name(statement: str) -> str | None:
    """The name the first `theorem`/`lemma` of a caller's reference statement declares, comments
    skipped. Reads the caller's text, never the proof's."""
    m = _DECLARES.search(_blank_comments(statement))
    return m.group("name") if m else None


def is_prelude(header: str) -> bool:
    """Whether a (normalised) header starts a `prelude` file."""
    return "prelude" in header.split()


def reference_command(statement: str, suffix: str) -> tuple[str, str]:
    """The statement as a command that declares it under its own name with `suffix` appended (at top
    level, so its dotted name opens the same namespaces as the caller's), and that name without
    `_root_.`: its import lines dropped (it is elaborated under the proof's header), a trailing
    `:=` or `:= by` completed with `sorry`."""
    text = split_header(statement).body.rstrip()
    m = _DECLARES.search(_blank_comments(text))
    if m is None:
        raise Rejected("statement: the reference statement declares no theorem or lemma")
    declared = m.group("name")
    # `«my thm»` takes the suffix inside its guillemets: after them it would be another token.
    name = declared[:-1] + suffix + "»" if declared.endswith("»") else declared + suffix
    text = text[: m.start("name")] + name + text[m.end("name") :]
    if re.search(r":=\s*(by)?$", text):
        text += " sorry"
    return text, name.removeprefix("_root_.")


@dataclass(frozen=True, slots=True)
class Queries:
    """The commands of one review and the line each answer is on."""

    policy: TrustPolicy
    printing: str
    suffix: str

    @staticmethod
    def new(policy: TrustPolicy, printing: str) -> Queries:
        return Queries(policy, printing, f"_kimina{secrets.token_hex(6)}")

    @property
    def axioms(self) -> list[str]:
        """The axioms whose identity is checked: every allowed one (`#print axioms` tells which of
        them count; unknown ones are answered with an error on their own line)."""
        return sorted(self.policy.allowed_axioms)

    def identity_lines(self) -> list[str]:
        return [f"{self.printing} #check _root_.{a}" for a in self.axioms]

    def theorem_lines(self) -> list[str]:
        """In the proof's environment: its axioms, its signature, the listed axioms' signatures."""
        lines = [f"{_AXIOMS_QUERY} _root_.{self.policy.theorem}"]
        if self.policy.statement is not None:
            lines.append(f"{self.printing} #check _root_.{self.policy.theorem}")
        return lines + self.identity_lines()

    def clean_lines(self) -> tuple[list[str], str | None]:
        """In a clean environment of the header: the reference (if any) and the axioms' signatures;
        with the reference's name."""
        if self.policy.statement is None:
            return self.identity_lines(), None
        text, name = reference_command(self.policy.statement, self.suffix)
        return [text, f"{self.printing} #check _root_.{name}", *self.identity_lines()], name


@dataclass(frozen=True, slots=True)
class Clean:
    """What a clean environment of the header says: the reference's signature and each axiom's."""

    reference: str | None
    axioms: dict[str, str | None]
    """Axiom -> its signature, or None where the clean environment has no such constant."""


class Failed(Exception):
    """Not the proof's fault (REPL crash, timeout): the outcome says so instead of a trust verdict."""

    def __init__(self, verdict: Verdict, error: str) -> None:
        super().__init__(error)
        self.verdict = verdict
        self.error = error


def identities(reply: Reply, first: int, names: list[str], wanted: Iterable[str]) -> dict[str, str | None]:
    """The signatures of the `wanted` axioms as `#check _root_.A` printed them, A = names[i] on
    line first + i (None: Lean's error there, no such constant)."""
    out: dict[str, str | None] = {}
    for i, name in enumerate(names):
        line = first + i
        if name not in wanted:
            continue
        if any(sev is Severity.ERROR for sev, _ in at_line(reply, line)):
            out[name] = None
        else:
            out[name] = signature(reply, line, name, f"the axiom {name}")
    return out


def _check_axioms(theorem: str, axioms: Iterable[str], allowed: frozenset[str], where: str) -> None:
    axioms = set(axioms)
    if SORRY_AXIOM in axioms:
        raise Rejected(f"sorry: {theorem} depends on sorryAx in {where} (a sorry or admit, however it was written)")
    bad = sorted(axioms - allowed)
    if bad:
        raise Rejected(
            f"axioms: {theorem} depends on {', '.join(bad)} in {where}, outside the allowed axioms"
            f" ({', '.join(sorted(allowed))})"
        )


def _check_identities(axioms: Iterable[str], there: dict[str, str | None], clean: Clean, where: str) -> None:
    for name in sorted(axioms):
        if clean.axioms.get(name) is None:
            raise Rejected(
                f"axioms: {name} is no constant of a clean environment of this header: it was declared"
                f" by the proof ({where}), not by Lean or the imports"
            )
        if there.get(name) != clean.axioms[name]:
            raise Rejected(
                f"axioms: {name} in {where} is `{there.get(name)}`, not the axiom of that name"
                f" (`{clean.axioms[name]}` in a clean environment of this header)"
            )


def _check_statement(theorem: str, proved: str, reference: str) -> None:
    if proved != reference:
        raise Rejected(f"statement: {theorem} proves `{proved}` but the reference statement is `{reference}`")


class Shared:
    """What every review of a supervisor shares (the Reviewer is one)."""

    def __init__(self, spec: ReplSpec, *, import_timeout: float, max_judges: int) -> None:
        self.spec = spec
        self.import_timeout = import_timeout
        self.judges = asyncio.Semaphore(max_judges)
        self.started = 0
        self.printing: str | None = None
        """The `set_option ... in` prefix of signature queries: learned from the first statement
        check (whether the REPL's Lean knows the options that turn elision off)."""


def refuse_prelude(header: str) -> None:
    if is_prelude(header):
        raise Rejected(
            "prelude: a `prelude` file chooses which of Lean's core modules it imports, so the names of"
            " the standard axioms (propext, Classical.choice, Quot.sound) are free for it to declare"
            " itself; trust levels audit and judge cannot vouch for its axioms (trust level check can"
            " check it)"
        )


class Review:
    """One proof's review: its commands, their bounds, and the axioms found so far."""

    def __init__(  # noqa: PLR0917
        self,
        reviewer: Shared,
        repl: Repl,
        env: int,
        base_env: int,
        policy: TrustPolicy,
        timeout: float,
        header: str,
    ) -> None:
        self.r = reviewer
        self.repl = repl
        self.env = env
        self.base_env = base_env
        self.policy = policy
        self.timeout = timeout
        self.header = header
        self.queries = Queries.new(policy, _PRINTING)
        self.found: dict[str, tuple[str, ...]] = {}  # the judge's answer replaces the audit's

    async def run(self, repl: Repl, request: bytes, what: str, *, records_env: bool = True) -> Reply:
        try:
            reply, _ = await asyncio.wait_for(repl.run(request, measure=False, records_env=records_env), self.timeout)
        except TimeoutError:
            await repl.kill()  # a command cannot be interrupted: the REPL goes
            raise Failed(Verdict.TIMEOUT, f"{what} ran past the proof's timeout of {self.timeout:g} s") from None
        except ReplCrashed as exc:
            raise Failed(Verdict.REPL_ERROR, f"the REPL failed during {what}: {exc}") from None
        if reply.error is not None:
            raise Failed(Verdict.REPL_ERROR, f"the REPL answered {what} with: {reply.error}")
        return reply

    async def clean(self, repl: Repl, env: int) -> Clean:
        """The reference's and the axioms' signatures in environment `env` of `repl`, a clean
        environment of the header (where no proof ran)."""
        lines, name = self.queries.clean_lines()
        reply = await self.run(repl, protocol.command("\n".join(lines), env=env), "elaborating the reference statement")
        reference = None
        if name is not None:
            first_check = lines[0].count("\n") + 2
            reference = signature(reply, first_check, name, "the reference statement", 1)
            first_axiom = first_check + 1
        else:
            first_axiom = 1
        return Clean(reference, identities(reply, first_axiom, self.queries.axioms, self.queries.axioms))

    def check_theorem(self, reply: Reply, clean: Clean, where: str) -> None:
        """The answers to `theorem_lines` in `reply`, against what the clean environment says."""
        theorem = self.policy.theorem
        axioms = axioms_answer(reply, 1, theorem, where)
        self.found[theorem] = axioms
        _check_axioms(theorem, axioms, self.policy.allowed_axioms, where)
        first = 2 if self.policy.statement is None else 3
        there = identities(reply, first, self.queries.axioms, axioms)
        _check_identities(axioms, there, clean, where)
        if clean.reference is not None:
            _check_statement(theorem, signature(reply, 2, theorem, f"{theorem} in {where}"), clean.reference)

    async def audit(self) -> None:
        if self.policy.statement is not None:
            self.queries = replace(self.queries, printing=await self.learn_printing())
        cmd = "\n".join(self.queries.theorem_lines())
        reply = await self.run(self.repl, protocol.command(cmd, env=self.env), "the audit")
        clean = await self.clean(self.repl, self.base_env)
        self.check_theorem(reply, clean, "the proof's environment")

    async def learn_printing(self) -> str:
        """Whether this Lean knows the options that turn elision off (pp.maxSteps is newer than some
        supported versions): asked once, of the header's environment."""
        if self.r.printing is None:
            probe = protocol.command(f"{_EXHAUSTIVE} #check Nat", env=self.base_env)
            reply = await self.run(self.repl, probe, "asking which printer options Lean knows")
            known = not any(m.severity is Severity.ERROR for m in reply.messages)
            self.r.printing = f"{_PRINTING} {_EXHAUSTIVE}" if known else _PRINTING
        return str(self.r.printing)
