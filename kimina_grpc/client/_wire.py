"""The contract's messages to and from the client's types: the options of a call, a proof, a result."""

from __future__ import annotations

from collections.abc import Iterable

from kimina_grpc.client._types import AstResult, Diagnostics, Message, Proof, Result, Sorry
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.verdict import Verdict

_INFOTREE = {
    None: pb.INFOTREE_MODE_UNSPECIFIED,
    "none": pb.INFOTREE_MODE_NONE,
    "full": pb.INFOTREE_MODE_FULL,
    "tactics": pb.INFOTREE_MODE_TACTICS,
    "original": pb.INFOTREE_MODE_ORIGINAL,
    "substantive": pb.INFOTREE_MODE_SUBSTANTIVE,
}
_SEVERITY = {pb.SEVERITY_INFO: "info", pb.SEVERITY_WARNING: "warning", pb.SEVERITY_ERROR: "error"}
TRUST_LEVELS = {
    None: pb.TRUST_LEVEL_UNSPECIFIED,
    "check": pb.TRUST_LEVEL_CHECK,
    "audit": pb.TRUST_LEVEL_AUDIT,
    "judge": pb.TRUST_LEVEL_JUDGE,
}


def options(  # noqa: PLR0917
    timeout: float | None,
    infotree: str | None,
    reuse: bool | None,
    diagnostics: bool | None,
    trust: str | None = None,
    allowed_axioms: Iterable[str] = (),
    cache: bool | None = None,
) -> pb.ProofOptions:
    if infotree not in _INFOTREE:
        raise ValueError(f"infotree must be one of {sorted(k for k in _INFOTREE if k)}, not {infotree!r}")
    if trust not in TRUST_LEVELS:
        raise ValueError(f"trust must be one of {sorted(k for k in TRUST_LEVELS if k)}, not {trust!r}")
    opts = pb.ProofOptions(infotree=_INFOTREE[infotree], trust=TRUST_LEVELS[trust], allowed_axioms=allowed_axioms)
    if timeout is not None:
        opts.timeout_seconds = timeout
    if reuse is not None:
        opts.reuse = reuse
    if diagnostics is not None:
        opts.diagnostics = diagnostics
    if cache is not None:
        opts.cache = cache
    return opts


def to_proto(proof: Proof) -> pb.Proof:
    msg = pb.Proof(id=proof.id, code=proof.code, tags=proof.tags or {})
    if proof.statement is not None:
        msg.options.statement = proof.statement
    if proof.theorem_name is not None:
        msg.options.theorem_name = proof.theorem_name
    return msg


def message_from_proto(m: pb.Message) -> Message:
    return Message(
        severity=_SEVERITY.get(m.severity, "unknown"),
        line=m.start.line,
        column=m.start.column,
        end_line=m.end.line if m.HasField("end") else None,
        end_column=m.end.column if m.HasField("end") else None,
        text=m.text,
    )


def from_proto(r: pb.ProofResult) -> Result:
    try:
        verdict = Verdict(r.verdict)
    except ValueError:
        verdict = Verdict.UNSPECIFIED
    d = r.diagnostics if r.HasField("diagnostics") else None
    return Result(
        id=r.id,
        verdict=verdict,
        messages=tuple(message_from_proto(m) for m in r.messages),
        sorries=tuple(
            Sorry(
                s.start.line,
                s.start.column,
                s.goal,
                s.end.line if s.HasField("end") else None,
                s.end.column if s.HasField("end") else None,
            )
            for s in r.sorries
        ),
        time=r.time_seconds,
        error=r.error,
        infotree=r.infotree if r.HasField("infotree") else None,
        reason=r.reason,
        axioms={a.theorem: tuple(a.axioms) for a in r.axioms} if r.axioms else None,
        diagnostics=None
        if d is None
        else Diagnostics(
            d.repl_id,
            d.queue_seconds,
            d.check_seconds,
            d.cpu_seconds,
            d.peak_memory_bytes,
            d.attempts,
            d.fresh_repl,
            d.from_cache,
            d.shared_check,
        ),
    )


def ast_from_proto(r: pb.AstResult) -> AstResult:
    return AstResult(r.module, r.ast, r.error, r.time_seconds)
