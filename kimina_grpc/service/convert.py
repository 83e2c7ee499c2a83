"""Proto <-> domain, and the validation rules the contract states. No logic beyond translation."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from google.rpc import error_details_pb2

from kimina_grpc.repl import InfotreeMode, Pos, Split, split_header
from kimina_grpc.service.tags import check_tags
from kimina_grpc.settings import Settings
from kimina_grpc.supervisor.exports import MODULE_NAME
from kimina_grpc.supervisor.jobs import STANDARD_AXIOMS, CheckOptions, Outcome, TrustLevel, TrustPolicy
from kimina_grpc.supervisor.trust import SORRY_AXIOM, statement_name
from kimina_grpc.v1 import verifier_pb2 as pb

MAX_ID_BYTES = 256

_INFOTREE: dict[int, InfotreeMode | None] = {
    pb.INFOTREE_MODE_NONE: None,
    pb.INFOTREE_MODE_FULL: "full",
    pb.INFOTREE_MODE_TACTICS: "tactics",
    pb.INFOTREE_MODE_ORIGINAL: "original",
    pb.INFOTREE_MODE_SUBSTANTIVE: "substantive",
}
_SEVERITY = {"info": pb.SEVERITY_INFO, "warning": pb.SEVERITY_WARNING, "error": pb.SEVERITY_ERROR}
_TRUST = {
    pb.TRUST_LEVEL_CHECK: TrustLevel.CHECK,
    pb.TRUST_LEVEL_AUDIT: TrustLevel.AUDIT,
    pb.TRUST_LEVEL_JUDGE: TrustLevel.JUDGE,
}
# A name goes on its own line of a Lean command: nothing that could end it or start another.
# A Lean identifier: dotted parts, each a plain word (letters, digits, `_`, `'`, `!`, `?`; not starting
# with a digit) or «escaped» (it goes into a Lean command: nothing that could end or comment it out).
_LEAN_PART = r"(?:«[^«»\n]+»|[^\W\d][\w'!?]*)"
_LEAN_NAME = re.compile(rf"{_LEAN_PART}(?:\.{_LEAN_PART})*")


class InvalidInput(Exception):
    """Input that breaks the contract's rules; one violation per broken rule."""

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {why}" for field, why in violations))
        self.violations = violations

    def bad_request(self) -> error_details_pb2.BadRequest:
        return error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in self.violations
            ]
        )


@dataclass(frozen=True, slots=True)
class Effective:
    """Options after inheritance: proof's own, then the request's, then the server's."""

    timeout: float
    infotree: InfotreeMode | None
    reuse: bool
    diagnostics: bool
    all_tactics: bool
    cache: bool
    trust: TrustPolicy | None = None


def check_options(opts: pb.ProofOptions, where: str, settings: Settings) -> list[tuple[str, str]]:
    problems = []
    if opts.HasField("timeout_seconds") and (why := _bad_timeout(opts.timeout_seconds, settings)):
        problems.append((f"{where}.timeout_seconds", why))
    if opts.infotree != pb.INFOTREE_MODE_UNSPECIFIED and opts.infotree not in _INFOTREE:
        problems.append((f"{where}.infotree", f"unknown infotree mode {opts.infotree}"))
    if opts.trust != pb.TRUST_LEVEL_UNSPECIFIED and opts.trust not in _TRUST:
        problems.append((f"{where}.trust", f"unknown trust level {opts.trust}"))
    for i, axiom in enumerate(opts.allowed_axioms):
        if axiom == SORRY_AXIOM:
            problems.append((f"{where}.allowed_axioms[{i}]", "sorryAx is never allowed"))
        elif not _LEAN_NAME.fullmatch(axiom):
            problems.append((f"{where}.allowed_axioms[{i}]", f"{axiom!r:.80} is not a Lean name"))
    if opts.HasField("theorem_name") and not _LEAN_NAME.fullmatch(opts.theorem_name):
        problems.append((f"{where}.theorem_name", f"{opts.theorem_name!r:.80} is not a Lean name"))
    if opts.HasField("statement") and len(opts.statement.encode()) > settings.max_code_bytes:
        problems.append((f"{where}.statement", f"must be at most {settings.max_code_bytes} bytes"))
    return problems


def _bad_timeout(timeout: float, settings: Settings) -> str:
    """Why a proof's timeout is refused ("" when it is not). Below the minimum a check would only
    kill a warm REPL (LEAN_SERVER_MIN_TIMEOUT)."""
    low, high = settings.min_timeout, settings.max_timeout
    if timeout > 0 and low <= timeout <= high:
        return ""
    return (
        f"must be in [{low:g}, {high:g}] (LEAN_SERVER_MIN_TIMEOUT, _MAX_TIMEOUT)"
        if low
        else f"must be in (0, {high:g}]"
    )


def _trust(own: pb.ProofOptions, request: pb.ProofOptions | None, settings: Settings) -> TrustPolicy | None:
    """The effective trust policy; None at CHECK. Its theorem is "" when none was named."""
    chain = [o for o in (own, request) if o is not None]
    code = next((o.trust for o in chain if o.trust != pb.TRUST_LEVEL_UNSPECIFIED), None)
    level = _TRUST.get(code, TrustLevel.CHECK) if code is not None else TrustLevel[settings.default_trust.upper()]
    if level is TrustLevel.CHECK:
        return None
    statement = next((o.statement for o in chain if o.HasField("statement")), None)
    theorem = next((o.theorem_name for o in chain if o.HasField("theorem_name")), None)
    if theorem is None and statement is not None:
        theorem = statement_name(statement)
    allowed = next((o.allowed_axioms for o in chain if o.allowed_axioms), ())
    return TrustPolicy(level, theorem or "", statement, STANDARD_AXIOMS | frozenset(allowed))


def _check_trust(
    own: pb.ProofOptions, request: pb.ProofOptions | None, where: str, settings: Settings
) -> list[tuple[str, str]]:
    policy = _trust(own, request, settings)
    if policy is None:
        return []
    if not policy.theorem:
        level = policy.level.name.lower()
        return [
            (f"{where}.theorem_name", f"trust level {level} needs theorem_name or a statement declaring the theorem")
        ]
    if policy.statement is not None and (declared := statement_name(policy.statement)) != policy.theorem:
        what = f"declares {declared}" if declared else "declares no theorem"
        return [(f"{where}.statement", f"the statement {what}, not theorem_name {policy.theorem}")]
    return []


def check_proof(
    proof: pb.Proof,
    where: str,
    settings: Settings,
    request: pb.ProofOptions | None = None,
    request_tags: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    problems = []
    id_bytes = len(proof.id.encode())
    if id_bytes == 0:
        problems.append((f"{where}.id", "must not be empty"))
    elif id_bytes > MAX_ID_BYTES:
        problems.append((f"{where}.id", f"must be at most {MAX_ID_BYTES} bytes"))
    if len(proof.code.encode()) > settings.max_code_bytes:
        problems.append((f"{where}.code", f"must be at most {settings.max_code_bytes} bytes"))
    problems += check_options(proof.options, f"{where}.options", settings)
    problems += check_tags(proof.tags, f"{where}.tags", request_tags)
    if not problems:
        problems += _check_trust(proof.options, request, f"{where}.options", settings)
    return problems


def check_batch(request: pb.VerifyRequest, settings: Settings) -> None:
    problems: list[tuple[str, str]] = []
    if not request.proofs:
        problems.append(("proofs", "must not be empty"))
    elif len(request.proofs) > settings.max_batch:
        problems.append(("proofs", f"must have at most {settings.max_batch} proofs"))
    problems += check_options(request.options, "options", settings)
    problems += check_tags(request.tags, "tags")
    seen: set[str] = set()
    for i, proof in enumerate(request.proofs):
        problems += check_proof(proof, f"proofs[{i}]", settings, request.options, request.tags)
        if proof.id and proof.id in seen:
            problems.append((f"proofs[{i}].id", f"duplicate id {proof.id!r}"))
        seen.add(proof.id)
    if problems:
        raise InvalidInput(problems)


def check_ast_request(request: pb.ExportAstRequest, settings: Settings) -> None:
    problems: list[tuple[str, str]] = []
    if bool(request.modules) == bool(request.code):
        problems.append(("modules", "give exactly one of modules and code"))
    for i, name in enumerate(request.modules):
        if not MODULE_NAME.fullmatch(name):
            problems.append((f"modules[{i}]", f"{name!r} is not a dotted Lean module name"))
    if request.module and not MODULE_NAME.fullmatch(request.module):
        problems.append(("module", f"{request.module!r} is not a dotted Lean module name"))
    if len(request.code.encode()) > settings.max_code_bytes:
        problems.append(("code", f"must be at most {settings.max_code_bytes} bytes"))
    if request.HasField("timeout_seconds") and not 0 < request.timeout_seconds <= settings.max_timeout:
        problems.append(("timeout_seconds", f"must be in (0, {settings.max_timeout:g}]"))
    if problems:
        raise InvalidInput(problems)


def effective(own: pb.ProofOptions, request: pb.ProofOptions | None, settings: Settings) -> Effective:
    def pick(field: str) -> pb.ProofOptions | None:
        for o in (own, request):
            if o is not None and o.HasField(field):  # type: ignore[arg-type]
                return o
        return None

    t = pick("timeout_seconds")
    r = pick("reuse")
    d = pick("diagnostics")
    a = pick("all_tactics")
    c = pick("cache")
    mode = own.infotree or (request.infotree if request is not None else 0) or pb.INFOTREE_MODE_NONE
    return Effective(
        timeout=t.timeout_seconds if t else settings.default_timeout,
        infotree=_INFOTREE[mode],
        reuse=r.reuse if r else True,
        diagnostics=d.diagnostics if d else False,
        all_tactics=a.all_tactics if a else False,
        trust=_trust(own, request, settings),
        cache=c.cache if c else True,
    )


def to_job(proof: pb.Proof, eff: Effective, deadline_left: float | None) -> tuple[Split, CheckOptions]:
    timeout = eff.timeout if deadline_left is None else max(0.001, min(eff.timeout, deadline_left))
    return split_header(proof.code), CheckOptions(
        timeout=timeout,
        deadline=None if deadline_left is None else time.monotonic() + deadline_left,
        infotree=eff.infotree,
        all_tactics=eff.all_tactics,
        reuse=eff.reuse,
        diagnostics=eff.diagnostics,
        trust=eff.trust,
        cache=eff.cache,
    )


def _pos(p: Pos) -> pb.Position:
    return pb.Position(line=p.line, column=p.column)


def to_result(proof_id: str, outcome: Outcome, diagnostics: bool) -> pb.ProofResult:
    result = pb.ProofResult(
        id=proof_id,
        verdict=pb.Verdict.ValueType(outcome.verdict.value),
        time_seconds=outcome.time_seconds,
        error=outcome.error,
        reason=outcome.reason,
        axioms=[pb.TheoremAxioms(theorem=name, axioms=axioms) for name, axioms in outcome.axioms],
    )
    reply = outcome.reply
    if reply is not None:
        for m in reply.messages:
            msg = result.messages.add(severity=_SEVERITY[m.severity.value], start=_pos(m.pos), text=m.data)
            if m.end_pos is not None:
                msg.end.CopyFrom(_pos(m.end_pos))
        for s in reply.sorries:
            sorry = result.sorries.add(goal=s.goal)
            if s.pos is not None:
                sorry.start.CopyFrom(_pos(s.pos))
            if s.end_pos is not None:
                sorry.end.CopyFrom(_pos(s.end_pos))
        for t in reply.tactics:
            tactic = result.tactics.add(start=_pos(t.pos), tactic=t.tactic, goals=t.goals)
            if t.end_pos is not None:
                tactic.end.CopyFrom(_pos(t.end_pos))
        if reply.infotree is not None:
            result.infotree = reply.infotree  # already JSON text (see Reply.infotree)
    if diagnostics:
        result.diagnostics.CopyFrom(
            pb.Diagnostics(
                repl_id=outcome.repl_id,
                queue_seconds=outcome.queue_seconds,
                check_seconds=outcome.time_seconds,
                cpu_seconds=outcome.cpu_seconds,
                peak_memory_bytes=outcome.peak_memory_bytes,
                attempts=outcome.attempts,
                fresh_repl=outcome.fresh_repl,
                review_seconds=outcome.review_seconds,
                from_cache=outcome.from_cache,
                shared_check=outcome.shared,
            )
        )
    return result


def not_checked(proof_id: str, why: str) -> pb.ProofResult:
    return pb.ProofResult(id=proof_id, verdict=pb.VERDICT_NOT_CHECKED, error=why)
