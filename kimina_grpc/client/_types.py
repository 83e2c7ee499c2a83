"""Typed results and the translation from the contract's messages. Shared by both clients."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2  # noqa: F401  (RetryInfo needs it registered)
from google.rpc import error_details_pb2, status_pb2

from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.verdict import Verdict


@dataclass(frozen=True, slots=True)
class Proof:
    id: str
    code: str
    statement: str | None = None
    """The reference statement the proof must prove (trust levels audit and judge)."""
    theorem_name: str | None = None
    """The theorem to audit; default: the one `statement` declares."""


@dataclass(frozen=True, slots=True)
class Message:
    severity: str
    line: int
    column: int
    end_line: int | None
    end_column: int | None
    text: str


@dataclass(frozen=True, slots=True)
class Sorry:
    line: int
    column: int
    goal: str


@dataclass(frozen=True, slots=True)
class Diagnostics:
    repl_id: str
    queue_seconds: float
    check_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int
    attempts: int
    fresh_repl: bool


@dataclass(frozen=True, slots=True)
class Result:
    id: str
    verdict: Verdict
    messages: tuple[Message, ...]
    sorries: tuple[Sorry, ...]
    time: float
    error: str
    infotree: str | None
    diagnostics: Diagnostics | None
    reason: str = ""
    """Why the trust policy rejected the proof (verdict UNTRUSTED)."""
    axioms: dict[str, tuple[str, ...]] | None = None
    """Each audited theorem's axioms (trust levels audit and judge)."""

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.VALID


@dataclass(frozen=True, slots=True)
class AstResult:
    module: str
    ast: str
    error: str
    time: float


class KiminaError(Exception):
    """An RPC failed for a reason retrying does not mend."""

    def __init__(self, code: grpc.StatusCode, message: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(f"{code.name}: {message}" + "".join(f"\n  {d}" for d in details))
        self.code = code
        self.details = details


class InvalidArgument(KiminaError):
    """The server refused the input; `details` lists each broken rule as "field: why"."""


class Unauthenticated(KiminaError):
    """The API key is missing or wrong."""


RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
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


def iter_proofs(proofs: str | Proof | Iterable[str | Proof]) -> Iterator[Proof]:
    """Proofs one by one, lazily; a bare string gets its position as id ("0", "1", ...)."""
    items: Iterable[str | Proof] = [proofs] if isinstance(proofs, str | Proof) else proofs
    for i, p in enumerate(items):
        yield p if isinstance(p, Proof) else Proof(str(i), p)


def as_proofs(proofs: str | Proof | Iterable[str | Proof]) -> list[Proof]:
    return list(iter_proofs(proofs))


def options(  # noqa: PLR0917
    timeout: float | None,
    infotree: str | None,
    reuse: bool | None,
    diagnostics: bool | None,
    trust: str | None = None,
    allowed_axioms: Iterable[str] = (),
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
    return opts


def to_proto(proof: Proof) -> pb.Proof:
    msg = pb.Proof(id=proof.id, code=proof.code)
    if proof.statement is not None:
        msg.options.statement = proof.statement
    if proof.theorem_name is not None:
        msg.options.theorem_name = proof.theorem_name
    return msg


def from_proto(r: pb.ProofResult) -> Result:
    try:
        verdict = Verdict(r.verdict)
    except ValueError:
        verdict = Verdict.UNSPECIFIED
    d = r.diagnostics if r.HasField("diagnostics") else None
    return Result(
        id=r.id,
        verdict=verdict,
        messages=tuple(
            Message(
                severity=_SEVERITY.get(m.severity, "unknown"),
                line=m.start.line,
                column=m.start.column,
                end_line=m.end.line if m.HasField("end") else None,
                end_column=m.end.column if m.HasField("end") else None,
                text=m.text,
            )
            for m in r.messages
        ),
        sorries=tuple(Sorry(s.start.line, s.start.column, s.goal) for s in r.sorries),
        time=r.time_seconds,
        error=r.error,
        infotree=r.infotree if r.HasField("infotree") else None,
        reason=r.reason,
        axioms={a.theorem: tuple(a.axioms) for a in r.axioms} if r.axioms else None,
        diagnostics=None
        if d is None
        else Diagnostics(
            d.repl_id, d.queue_seconds, d.check_seconds, d.cpu_seconds, d.peak_memory_bytes, d.attempts, d.fresh_repl
        ),
    )


def ast_from_proto(r: pb.AstResult) -> AstResult:
    return AstResult(r.module, r.ast, r.error, r.time_seconds)


def _status_details(err: grpc.RpcError) -> status_pb2.Status | None:
    for key, value in getattr(err, "trailing_metadata", lambda: None)() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def retry_delay(err: grpc.RpcError) -> float | None:
    """The server's suggested delay (google.rpc.RetryInfo), if it sent one."""
    status = _status_details(err)
    for detail in status.details if status else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def translate(err: grpc.RpcError) -> Exception:
    """A typed exception for a non-retryable failure."""
    code: grpc.StatusCode = err.code()
    message: str = err.details() or ""
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        status = _status_details(err)
        details: list[str] = []
        for detail in status.details if status else ():
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                details += [f"{v.field}: {v.description}" for v in bad.field_violations]
        return InvalidArgument(code, message, tuple(details))
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(code, message)
    return KiminaError(code, message)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError) and exc.code() in RETRYABLE


def channel_args(target: str) -> tuple[str, list[tuple[str, Any]]]:
    """Several comma-separated addresses become one ipv4/ipv6 target; more than one backend gets
    round_robin with health checks on the readiness service."""
    addresses = [a.strip() for a in target.split(",") if a.strip()]
    if len(addresses) > 1:
        target = "ipv4:" + ",".join(a.removeprefix("ipv4:") for a in addresses)
    # round_robin over the backends whose readiness health service says SERVING.
    config = (
        '{"loadBalancingConfig": [{"round_robin": {}}],'
        ' "healthCheckConfig": {"serviceName": "kimina_grpc.v1.VerifierService"}}'
    )
    opts: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.max_send_message_length", 64 << 20),
    ]
    if len(addresses) > 1 or target.startswith("dns:"):
        opts.append(("grpc.service_config", config))
    return target, opts
