"""Typed results and the translation from the contract's messages. Shared by both clients."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2  # noqa: F401  (RetryInfo needs it registered)
from google.rpc import error_details_pb2, status_pb2

from kimina_grpc import extras
from kimina_grpc.client._kimina_results import KiminaCheckResponse, KiminaResult, KiminaSnippet
from kimina_grpc.client.reach import with_default_port
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
    tags: Mapping[str, str] | None = None
    """Labels kept with the proof's row in the server's proof log (e.g. problem, model, step, sample)."""


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
    end_line: int | None = None
    end_column: int | None = None


@dataclass(frozen=True, slots=True)
class Diagnostics:
    repl_id: str
    queue_seconds: float
    check_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int
    attempts: int
    fresh_repl: bool
    from_cache: bool = False
    """No Lean ran: the result is a stored one (the fields above are the original check's)."""
    shared_check: bool = False
    """An identical proof's check, already queued or running, answered this one too."""


@dataclass(frozen=True, slots=True)
class Result(KiminaResult):
    """One proof's result. Kimina's `r.response` and `r.analyze()` work too (see _kimina_results.py)."""

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
class CheckResponse(KiminaCheckResponse):
    """What `check` returns: `.results` in input order, as Kimina's `CheckResponse` has them (with
    Kimina's `merge` and `analyze(elapsed)`)."""

    results: list[Result]

    def __iter__(self) -> Iterator[Result]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> Result:
        return self.results[i]


class Snippet(KiminaSnippet, Proof):
    """Kimina's name for a proof: `Snippet(id=..., code=...)`, `Snippet.from_code(code)`."""

    __slots__ = ()


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
        self.message = message
        self.details = details
        self.attempts = 1
        """Calls made before giving up (retries of UNAVAILABLE and RESOURCE_EXHAUSTED included)."""

    def __reduce__(self) -> tuple[Any, ...]:  # crosses processes (the fork-safe client's helper)
        return type(self), (self.code, self.message, self.details), {"attempts": self.attempts}


class InvalidArgument(KiminaError):
    """The server refused the input; `details` lists each broken rule as "field: why"."""


class Unauthenticated(KiminaError):
    """The API key is missing or wrong."""


KEY_SOURCES = "the client sends api_key=..., else $LEAN_SERVER_API_KEY"
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


# Column names of the datasets the seed benchmarked (and Kimina's field names), most specific first.
ID_COLUMNS = ("problem_id", "custom_id", "id", "name", "uuid")
CODE_COLUMNS = ("full_proof", "formal_proof", "code", "proof", "lean4_code", "formal_statement")

ProofInput = str | Proof | Mapping[str, Any]
Proofs = ProofInput | Iterable[ProofInput]


def pick_column(
    columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, *, flag: str | None = None
) -> str:
    """The column named `wanted`, else the first of `candidates` present. `flag` is the option that
    names it (`--id-column`), for the message."""
    name = flag or f"{what} column"
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{name} {wanted!r} is not a column; columns: {', '.join(columns)}")
        return wanted
    for candidate in candidates:
        if candidate in columns:
            return candidate
    hint = f"pass {flag}" if flag else "name it"
    raise ValueError(f"cannot tell which column holds the {what}; {hint} (columns: {', '.join(columns)})")


def _from_mapping(row: Mapping[str, Any], i: int, id_column: str | None, code_column: str | None) -> Proof:
    """A dict with our field names (id, code) or Kimina's (custom_id, proof), or a dataset row."""
    columns = list(row)
    code = pick_column(columns, code_column, CODE_COLUMNS, "code")
    if id_column is None and not any(c in row for c in ID_COLUMNS):
        return Proof(str(i), str(row[code]))
    return Proof(str(row[pick_column(columns, id_column, ID_COLUMNS, "id")]), str(row[code]))


def iter_proofs(proofs: Proofs, id_column: str | None = None, code_column: str | None = None) -> Iterator[Proof]:
    """Proofs one by one, lazily: strings (their position is the id: "0", "1", ...), Proofs, dicts
    with `id`/`code` or Kimina's `custom_id`/`proof`, or the rows of a `datasets.Dataset` (columns
    detected, or named by id_column/code_column)."""
    items: Iterable[ProofInput] = [proofs] if isinstance(proofs, str | Proof | Mapping) else proofs
    for i, p in enumerate(items):
        if isinstance(p, Proof):
            yield p
        elif isinstance(p, Mapping):
            yield _from_mapping(p, i, id_column, code_column)
        else:
            yield Proof(str(i), p)


def as_proofs(proofs: Proofs, id_column: str | None = None, code_column: str | None = None) -> list[Proof]:
    return list(iter_proofs(proofs, id_column, code_column))


def results_to_rows(results: Iterable[Result]) -> list[dict[str, Any]]:
    """One flat dict per result (verdict by name; messages and sorries as lists of dicts), ready for
    `pandas.DataFrame(rows)` or `datasets.Dataset.from_list(rows)`."""
    rows = []
    for r in results:
        first_error = next((m for m in r.messages if m.severity == "error"), None)
        rows.append(
            {
                "id": r.id,
                "verdict": r.verdict.name,
                "ok": r.ok,
                "time": r.time,
                "error": r.error,
                "first_error": first_error.text if first_error else "",
                "messages": [asdict(m) for m in r.messages],
                "sorries": [asdict(s) for s in r.sorries],
            }
        )
    return rows


def results_to_dataset(results: Iterable[Result]) -> Any:
    """The results as a `datasets.Dataset` (needs `datasets`: the bench extra)."""
    extras.require("bench", "results_to_dataset")
    import datasets

    return datasets.Dataset.from_list(results_to_rows(results))


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


def not_checked(pid: str, error: str) -> Result:
    """A result for a proof the server never answered (the call failed)."""
    return Result(pid, Verdict.NOT_CHECKED, (), (), 0.0, error, None, None)


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


def tried(exc: KiminaError, attempts: int) -> KiminaError:
    exc.attempts = attempts
    return exc


def translate(err: grpc.RpcError) -> KiminaError:
    """A typed exception for a non-retryable failure."""
    code: grpc.StatusCode = err.code()
    message: str = err.details() or ""
    if connection_lost(err):
        return KiminaError(grpc.StatusCode.UNAVAILABLE, "the connection to the server was lost mid-call")
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        status = _status_details(err)
        details: list[str] = []
        for detail in status.details if status else ():
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                details += [f"{v.field}: {v.description}" for v in bad.field_violations]
        return InvalidArgument(code, message, tuple(details))
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(code, f"{message} ({KEY_SOURCES})")
    return KiminaError(code, message)


def handshake_failed(details: str) -> bool:
    """A TLS handshake that failed: a set-up mistake (wrong CA, TLS against plaintext), not an outage."""
    return "handshake failed" in details.lower()


def connection_lost(err: grpc.RpcError) -> bool:
    """gRPC core's own INTERNAL for a message sent on a call whose connection just went away (the
    server killed mid-stream): an outage like UNAVAILABLE, not an error of the server's."""
    return err.code() is grpc.StatusCode.INTERNAL and (err.details() or "") == "Internal error from Core"


def is_retryable(exc: BaseException) -> bool:
    if not isinstance(exc, grpc.RpcError):
        return False
    return (exc.code() in RETRYABLE and not handshake_failed(exc.details() or "")) or connection_lost(exc)


def http_hint(target: str) -> str:
    """The one line for a URL where a gRPC address belongs (a Kimina habit: http://host:8000)."""
    rest = target.split("://", 1)[1].split("/", 1)[0]
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    return (
        f"{target!r} is a URL; kimina-grpc speaks gRPC, not HTTP: give host:port of the gRPC server, "
        f"e.g. {host or 'localhost'}:50051"
    )


def channel_args(target: str) -> tuple[str, list[tuple[str, Any]]]:
    """Several comma-separated addresses become one ipv4/ipv6 target; more than one backend gets
    round_robin with health checks on the readiness service."""
    if "://" in target and not target.startswith("dns:"):
        raise ValueError(http_hint(target))
    addresses = [with_default_port(a.strip()) for a in target.split(",") if a.strip()]
    if len(addresses) == 1:
        target = addresses[0]  # `localhost` means localhost:50051, not gRPC's default port 443
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
        # A server that was down for a moment is found again within a second or two, not after gRPC's
        # default reconnect backoff (up to 120 s), which would outlast the client's retries.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]
    if len(addresses) > 1 or target.startswith("dns:"):
        opts.append(("grpc.service_config", config))
    return target, opts


Pem = str | Path | bytes
"""A PEM file's path, or its bytes."""


def _pem(value: Pem | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def channel_credentials(
    ca: Pem | None = None, cert: Pem | None = None, key: Pem | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials: `ca` to trust (default: the system's roots), `cert`/`key` for mutual TLS."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs its key, and the other way round")
    return grpc.ssl_channel_credentials(root_certificates=_pem(ca), private_key=_pem(key), certificate_chain=_pem(cert))
