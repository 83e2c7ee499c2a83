"""Trust levels: what a VALID verdict vouches for beyond "Lean printed no error and no sorry".

Uses the REPL driver, not the pool: the pool calls `Reviewer.review` with its warm REPL right after a
proof's body came back VALID, and gets the final Outcome back.

Every query names the theorem as a global constant, `_root_.NAME`, through commands that resolve it
as one (`#print axioms`, and `#check` of a bare identifier, which prints the constant's signature),
never as a term: a term would see the proof's section `variable`s first (a `variable (t : <the
statement>)` next to a `theorem t : True` would print the statement's type), and an unqualified name
would resolve in the proof's namespace and `open`s. The signature is printed with `pp.all`, and with
`pp.fullNames` and `pp.privateNames` set explicitly: `pp.all` only sets their defaults, and an option
the proof set explicitly wins over a default (Lean's `getPPFullNames o := o.get pp.fullNames.name
(getPPAll o)`), so a proof's `set_option pp.fullNames false` inside `namespace X` would print its own
`X.instAddNat` as the core `instAddNat`. Options that only hide detail make the texts differ, which
fails closed. The reference statement is always elaborated in the header's environment (the pool
REPL's base environment, where no proof has run), and the two signatures are compared as text.

- audit (on the pool REPL): the queries in the proof's own environment, the reference in the
  header's. `#print axioms` must list only allowed axioms (never `sorryAx`), the theorem must exist
  (so `#exit` before it, or another name, fails), and its signature must equal the reference's.
  The queries run where the proof's own syntax is in force: a proof that redefines `#print axioms`
  or `#check` fools the audit. That is the audit's documented limit. Nor can it see
  `debug.skipKernelTC`: only a kernel re-check can (the judge's, up to REPL v4.29).
- judge: the audit first (a naive cheat is rejected without paying an import); then the proof's
  environment is pickled (`pickleTo`) and unpickled (`unpickleEnvFrom`) into a separate REPL
  started for this proof with the pool's ReplSpec (same command, box, memory cap). A pickle holds
  the imports, the proof's constants and its command scopes (namespace, `open`s, `variable`s,
  options: the queries above are immune to them), but no environment extensions: the proof's
  macros, elaborators, notations, instances and attributes do not come back, so its syntax cannot
  reach the judge's queries. Up to REPL v4.29 unpickling replays every constant through the kernel
  (`Environment.replay`): a proof that got past the kernel (`debug.skipKernelTC`) makes the REPL
  exit with a "(kernel)" exception, which the judge reports; so does, as far as the sources tell,
  an honest `native_decide` (the kernel evaluates its compiled code, which a replay does not
  compile): the judge cannot vouch for it. From v4.30 the REPL re-adds constants without the kernel.
  In a box, the pickle is written in the proof's box and carried into the judge's by the server
  (repl/boxfs.py: no symlink, FIFO or size the proof's processes chose is followed).

Limits of the statement check (both levels): signatures are compared as `pp.all` prints them, so
bound variable and universe names must match the reference's; a reference that declares its own
definitions is not supported (the proof's same-named definitions would print alike).

Time: each command of the audit and the judge is bounded by the proof's own timeout (so a trusted
check can take up to a few times it), the judge's import (unpickle) by the pool's import timeout.
The judge REPL is a process beyond LEAN_SERVER_MAX_REPLS; at most `max_judges` run at once (the
pool's bound on concurrent imports), and the pool REPL that ran the proof stays busy meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from kimina_grpc.repl import Repl, ReplCrashed, ReplSpec, Reply, Severity, boxfs, protocol, split_header
from kimina_grpc.supervisor.jobs import Outcome, TrustLevel, TrustPolicy
from kimina_grpc.verdict import Verdict

SORRY_AXIOM = "sorryAx"
NATIVE_AXIOMS = frozenset({"Lean.ofReduceBool", "Lean.trustCompiler"})
"""What `native_decide` (and `decide +native`) rests on: the compiler's evaluation of Lean code."""
# `#print axioms` answers exactly one of these (Lean's Elab/Print.lean); anything else fails closed.
# Axiom names are plain dotted names: one whose printed form could imitate the list (`Name.toString`
# leaves a name starting with `?` unescaped: `«?x] depends on axioms: [propext»`) cannot pass.
_AXIOM_NAME = r"[^\W\d][\w'!?]*(?:\.[^\W\d][\w'!?]*)*"
_AXIOMS = re.compile(rf"'(?P<name>[^'\n]+)' depends on axioms: \[(?P<list>{_AXIOM_NAME}(?:, {_AXIOM_NAME})*)\]")
_NO_AXIOMS = re.compile(r"'(?P<name>[^'\n]+)' does not depend on any axioms")
_DECLARES = re.compile(r"(?:^|\s)(?:theorem|lemma)\s+(?P<name>[^\s:({\[⦃]+)")


# Names printed in full, explicitly: the proof's own settings of these options (carried into the
# judge by the pickle) win over pp.all's defaults, and newer Lean prints `#print axioms`' names
# relative to the current namespace and `open`s otherwise.
_NAMES = "set_option pp.fullNames true in set_option pp.privateNames true in"
_PRINTING = f"set_option pp.all true in {_NAMES}"
# Nothing elided: the printer stops after pp.maxSteps (5000) and prints the rest as `⋯`, which would
# make two long statements print alike. Newer options: used where the REPL's Lean knows them (see
# `Reviewer.printing`); a signature with `⋯` in it fails closed either way.
_EXHAUSTIVE = "set_option pp.maxSteps 1000000000 in set_option pp.deepTerms true in set_option pp.proofs true in"
_ELIDED = "⋯"


def statement_name(statement: str) -> str | None:
    """The name the first `theorem`/`lemma` of a caller's reference statement declares, comments
    skipped. Reads the caller's text, never the proof's."""
    text = re.sub(r"/-.*?-/", " ", statement, flags=re.S)
    text = re.sub(r"--[^\n]*", " ", text)
    m = _DECLARES.search(text)
    return m.group("name") if m else None


def _reference(statement: str) -> str:
    """The statement as a command that declares it: its import lines dropped (it is elaborated under
    the proof's imports), a trailing `:=` or `:= by` completed with `sorry`."""
    text = split_header(statement).body.rstrip()
    if re.search(r":=\s*(by)?$", text):
        text += " sorry"
    return text


@dataclass(frozen=True, slots=True)
class _Plan:
    """The commands of one review and the line each answer is expected on."""

    ns: str
    """A fresh namespace for the reference, unknown to the proof."""

    @staticmethod
    def new() -> _Plan:
        return _Plan(f"KiminaRef{secrets.token_hex(6)}")

    def theorem_lines(self, policy: TrustPolicy, printing: str = _PRINTING) -> list[str]:
        lines = [f"{_NAMES} #print axioms _root_.{policy.theorem}"]
        if policy.statement is not None:
            lines.append(f"{printing} #check _root_.{policy.theorem}")
        return lines

    def reference_lines(self, policy: TrustPolicy, printing: str = _PRINTING) -> list[str]:
        assert policy.statement is not None
        return [
            f"namespace {self.ns}",
            _reference(policy.statement),
            f"end {self.ns}",
            f"{printing} #check _root_.{self.ns}.{policy.theorem}",
        ]


class _Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Failed(Exception):
    """Not the proof's fault (REPL crash, timeout): the outcome says so instead of a trust verdict."""

    def __init__(self, verdict: Verdict, error: str) -> None:
        super().__init__(error)
        self.verdict = verdict
        self.error = error


def _at(reply: Reply, line: int) -> list[tuple[Severity, str]]:
    """Messages of one line of the command (each query has a line of its own)."""
    return [(m.severity, m.data) for m in reply.messages if m.pos.line == line]


def _axioms(reply: Reply, line: int, theorem: str, where: str) -> tuple[str, ...]:
    found = _at(reply, line)
    errors = [text for sev, text in found if sev is Severity.ERROR]
    if errors:
        raise _Rejected(f"missing-theorem: {where} has no theorem {theorem} (Lean: {errors[0][:300]})")
    if len(found) != 1:
        raise _Rejected(f"audit: {len(found)} answers to #print axioms {theorem} in {where}, not one")
    text = found[0][1].strip()
    m = _AXIOMS.fullmatch(text) or _NO_AXIOMS.fullmatch(text)
    if m is None or m.group("name").removeprefix("_root_.") != theorem:
        raise _Rejected(f"audit: unexpected answer to #print axioms {theorem} in {where}: {text[:300]}")
    return tuple(sorted(set(m.group("list").split(", ")))) if "list" in m.groupdict() else ()


def _signature(reply: Reply, line: int, name: str, what: str, first: int | None = None) -> str:
    """The signature `#check _root_.NAME` printed on `line` without the name (universe parameters,
    binders, type), whitespace-normalised; an error on lines `first`..`line` (the reference's own
    lines) means the statement does not elaborate."""
    errors = [m.data for m in reply.messages if (first or line) <= m.pos.line <= line and m.severity is Severity.ERROR]
    if errors:
        raise _Rejected(f"statement: {what} does not elaborate (Lean: {errors[0][:300]})")
    head = re.compile(rf"(?:_root_\.)?{re.escape(name)}(?=[\s.:]|$)", re.S)
    infos = [m for sev, text in _at(reply, line) if sev is Severity.INFO and (m := head.match(text))]
    if len(infos) != 1:
        raise _Rejected(f"statement: no single signature of {name} printed for {what}")
    signature = _collapse(infos[0].string[infos[0].end() :])
    if _ELIDED in signature:
        raise _Rejected(f"statement: the signature of {what} was printed with parts elided ({_ELIDED})")
    return signature


def _collapse(text: str) -> str:
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


def _check_axioms(theorem: str, axioms: Iterable[str], allowed: frozenset[str], where: str) -> None:
    axioms = set(axioms)
    if SORRY_AXIOM in axioms:
        raise _Rejected(f"sorry: {theorem} depends on sorryAx in {where} (a sorry or admit, however it was written)")
    bad = sorted(axioms - allowed)
    if bad:
        raise _Rejected(
            f"axioms: {theorem} depends on {', '.join(bad)} in {where}, outside the allowed axioms"
            f" ({', '.join(sorted(allowed))})"
        )


def _check_statement(theorem: str, proved: str, reference: str) -> None:
    if proved != reference:
        raise _Rejected(f"statement: {theorem} proves `{proved}` but the reference statement is `{reference}`")


class Reviewer:
    """Runs the audit and the judge for the pool. One per supervisor."""

    def __init__(self, spec: ReplSpec, *, import_timeout: float, max_judges: int) -> None:
        self.spec = spec
        self.import_timeout = import_timeout
        self.judges = asyncio.Semaphore(max_judges)
        self.started = 0
        self.printing: str | None = None
        """The `set_option ... in` prefix of signature queries: learned from the first statement
        check (whether the REPL's Lean knows the options that turn elision off)."""

    async def review(
        self, repl: Repl, outcome: Outcome, *, env: int, base_env: int, policy: TrustPolicy, timeout: float
    ) -> Outcome:
        """The final outcome of a proof whose body came back VALID in environment `env` of `repl`
        (whose header-only environment is `base_env`). May kill `repl` (timeout); never raises
        but for cancellation."""
        review = _Review(self, repl, env, base_env, policy, timeout)
        try:
            await review.audit()
            if policy.level is TrustLevel.JUDGE:
                await review.judge()
        except _Rejected as exc:
            outcome = replace(outcome, verdict=Verdict.UNTRUSTED, reason=exc.reason)
        except _Failed as exc:
            outcome = replace(outcome, verdict=exc.verdict, error=exc.error)
        return replace(outcome, axioms=tuple(review.found.items()))


class _Review:
    """One proof's review: its commands, their bounds, and the axioms found so far."""

    def __init__(  # noqa: PLR0917
        self, reviewer: Reviewer, repl: Repl, env: int, base_env: int, policy: TrustPolicy, timeout: float
    ) -> None:
        self.r = reviewer
        self.repl = repl
        self.env = env
        self.base_env = base_env
        self.policy = policy
        self.timeout = timeout
        self.plan = _Plan.new()
        self.found: dict[str, tuple[str, ...]] = {}  # the judge's answer replaces the audit's
        self.reference: str | None = None
        """The reference statement's signature, once elaborated (by the audit)."""
        self.printing = _PRINTING

    async def run(self, repl: Repl, request: bytes, what: str, *, records_env: bool = True) -> Reply:
        try:
            reply, _ = await asyncio.wait_for(repl.run(request, measure=False, records_env=records_env), self.timeout)
        except TimeoutError:
            await repl.kill()  # a command cannot be interrupted: the REPL goes
            raise _Failed(Verdict.TIMEOUT, f"{what} ran past the proof's timeout of {self.timeout:g} s") from None
        except ReplCrashed as exc:
            raise _Failed(Verdict.REPL_ERROR, f"the REPL failed during {what}: {exc}") from None
        if reply.error is not None:
            raise _Failed(Verdict.REPL_ERROR, f"the REPL answered {what} with: {reply.error}")
        return reply

    def check_theorem(self, reply: Reply, where: str) -> None:
        theorem = self.policy.theorem
        self.found[theorem] = _axioms(reply, 1, theorem, where)
        _check_axioms(theorem, self.found[theorem], self.policy.allowed_axioms, where)
        if self.reference is not None:
            _check_statement(theorem, _signature(reply, 2, theorem, f"{theorem} in {where}"), self.reference)

    async def audit(self) -> None:
        if self.policy.statement is not None:
            self.printing = await self.learn_printing()
        cmd = "\n".join(self.plan.theorem_lines(self.policy, self.printing))
        reply = await self.run(self.repl, protocol.command(cmd, env=self.env), "the audit")
        if self.policy.statement is not None:
            self.reference = await self.elaborate_reference()
        self.check_theorem(reply, "the proof's environment")

    async def learn_printing(self) -> str:
        """Whether this Lean knows the options that turn elision off (pp.maxSteps is newer than some
        supported versions): asked once, of the header's environment."""
        if self.r.printing is None:
            probe = protocol.command(f"{_EXHAUSTIVE} #check Nat", env=self.base_env)
            reply = await self.run(self.repl, probe, "asking which printer options Lean knows")
            known = not any(m.severity is Severity.ERROR for m in reply.messages)
            self.r.printing = f"{_PRINTING} {_EXHAUSTIVE}" if known else _PRINTING
        return self.r.printing

    async def elaborate_reference(self) -> str:
        """The reference statement's signature, elaborated in the header's environment."""
        cmd = "\n".join(self.plan.reference_lines(self.policy, self.printing))
        reply = await self.run(
            self.repl, protocol.command(cmd, env=self.base_env), "elaborating the reference statement"
        )
        name = f"{self.plan.ns}.{self.policy.theorem}"
        return _signature(reply, cmd.count("\n") + 1, name, "the reference statement", 1)

    async def judge(self) -> None:
        # Without a box, the pickle goes through a private directory of the server's. Each box has a
        # private /tmp: the pickle is written in the proof's box, carried over by the server and put
        # in the judge's box, so no host directory is ever writable by both.
        tmp = Path(tempfile.mkdtemp(prefix="kimina-judge-"))
        boxed = self.repl.boxed
        pickle = f"/tmp/kimina-judge-{uuid.uuid4().hex}.olean" if boxed else str(tmp / "proof.olean")
        try:
            # pickleTo answers with the env it was given and records none.
            pickled = await self.run(
                self.repl, protocol.pickle_to(pickle, self.env), "pickling the proof", records_env=False
            )
            if pickled.env != self.env:
                raise _Failed(Verdict.REPL_ERROR, f"the REPL answered pickling env {self.env} with env {pickled.env}")
            async with self.r.judges:
                self.r.started += 1
                judge = await self.start(f"judge-{self.r.started}")
                try:
                    try:
                        await asyncio.wait_for(judge.ping(), self.r.import_timeout)  # it reads: its box is up
                    except (ReplCrashed, TimeoutError) as exc:
                        raise _Failed(Verdict.REPL_ERROR, f"the judge's REPL did not start: {exc}") from None
                    await judge.settle()
                    if boxed:
                        await self.carry(pickle, judge)
                    reply = await self.unpickle_and_check(judge, pickle)
                finally:
                    await judge.kill()
        finally:
            if boxed and self.repl.alive:
                with contextlib.suppress(OSError):
                    await boxfs.remove_from_box(self.repl.pid, pickle)
            shutil.rmtree(tmp, ignore_errors=True)
        self.check_theorem(reply, "the judge's clean environment")

    async def carry(self, pickle: str, judge: Repl) -> None:
        """The pickle, from the proof's box into the judge's: a file the proof's processes may have
        replaced by a symlink, a FIFO or something endless (boxfs refuses each)."""
        try:
            data = await boxfs.read_from_box(self.repl.pid, pickle)
            await boxfs.write_into_box(judge.pid, pickle, data)
        except OSError as exc:
            raise _Failed(Verdict.REPL_ERROR, f"cannot carry the pickle into the judge's box: {exc}") from None

    async def start(self, repl_id: str) -> Repl:
        try:
            return await Repl.start(self.r.spec, repl_id)
        except ReplCrashed as exc:
            raise _Failed(Verdict.REPL_ERROR, f"cannot start the judge's REPL: {exc}") from None

    async def unpickle_and_check(self, judge: Repl, pickle: str) -> Reply:
        try:
            reply, _ = await asyncio.wait_for(
                judge.run(protocol.unpickle_env_from(pickle), measure=False), self.r.import_timeout
            )
        except TimeoutError:
            raise _Failed(
                Verdict.TIMEOUT, f"the judge's import ran past the import timeout of {self.r.import_timeout:g} s"
            ) from None
        except ReplCrashed as exc:
            # Up to REPL v4.29 unpickling replays each constant through the kernel and an uncaught
            # kernel exception ends the process: the proof's constants do not type-check.
            if "(kernel)" in exc.stderr:
                tail = exc.stderr.strip()[-500:]
                native = sorted(set(self.found.get(self.policy.theorem, ())) & NATIVE_AXIOMS)
                if native:
                    raise _Rejected(
                        f"kernel: the judge cannot re-check native_decide ({', '.join(native)}): replaying it"
                        f" through the kernel needs its compiled code, which a pickle does not carry; trust"
                        f" level audit checks such proofs (Lean: {tail})"
                    ) from None
                raise _Rejected(
                    f"kernel: the kernel rejected the proof's constants on the judge's re-check: {tail}"
                ) from None
            raise _Failed(Verdict.REPL_ERROR, f"the judge's REPL failed while unpickling: {exc}") from None
        if reply.error is not None or reply.env is None:
            raise _Failed(Verdict.REPL_ERROR, f"the judge's REPL answered the unpickle with: {reply.error}")
        cmd = "\n".join(self.plan.theorem_lines(self.policy, self.printing))
        return await self.run(judge, protocol.command(cmd, env=reply.env), "the judge's check")
