"""`kimina-grpc check` and `kimina-grpc bench`: client-side commands on the Python client."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from kimina_grpc.client._errors import KEY_SOURCES, KiminaError, Unauthenticated, handshake_failed
from kimina_grpc.client._sync import KiminaClient
from kimina_grpc.client._types import Proof, not_checked
from kimina_grpc.client.benchmark import UsageError, load_proofs, result_json, run_bench
from kimina_grpc.client.declared import theorem_names
from kimina_grpc.client.reach import unreachable


def key_hint(api_key: str | None) -> str:
    """Where the key a refused command sent came from, and where it must come from."""
    server = "it must be the server's key (its LEAN_SERVER_API_KEY or LEAN_SERVER_API_KEY_FILE)"
    if not api_key:
        return f"no key was sent: pass --api-key or set LEAN_SERVER_API_KEY; {server}"
    if api_key == os.environ.get("LEAN_SERVER_API_KEY"):
        return f"the key sent is $LEAN_SERVER_API_KEY (--api-key overrides it); {server}"
    return f"the key sent is --api-key's (without it, $LEAN_SERVER_API_KEY); {server}"


def error_line(exc: Exception, target: str, tls: bool, api_key: str | None = None) -> str:
    """The one line for a failed command. A server that cannot be reached reads the same in check,
    bench and health, with a hint when TLS is the likely cause (gRPC only says "Socket closed" or
    names an OpenSSL error); a refused key says where the key comes from."""
    first = str(exc).splitlines()[0]
    if isinstance(exc, Unauthenticated):
        return f"{exc.code.name}: {exc.message.removesuffix(f' ({KEY_SOURCES})')}: {key_hint(api_key)}"
    if not isinstance(exc, KiminaError) or exc.code is not grpc.StatusCode.UNAVAILABLE:
        return first
    ssl_error = re.search(r"OPENSSL_internal:(\w+)", first)
    why = ssl_error.group(1) if ssl_error else ""
    if why == "WRONG_VERSION_NUMBER":
        hint = "does the server speak TLS? (if not, drop --tls/--ca)"
        return f"cannot reach {target}: the TLS handshake failed ({why}): {hint}"
    if why or handshake_failed(first):
        hint = "is --ca the CA that signed the server's certificate?"
        return f"cannot reach {target}: the TLS handshake failed ({why or 'no detail'}): {hint}"
    if "Socket closed" in first and not tls:
        hint = "does it speak TLS? (then use --tls, and --ca for a private CA)"
        return f"cannot reach {target}: the server closed the connection: {hint}"
    return f"cannot reach {target}: {first}"


NO_THEOREM = "no theorem found"
NO_THEOREM_WARNING = (
    f"{NO_THEOREM}: Lean accepted the file, but it proves nothing by name (--trust audit requires a theorem)"
)


def uses_tls(tls: dict[str, Any]) -> bool:
    return bool(tls.get("tls") or tls.get("ca") or tls.get("cert"))


def check(
    files: list[str],
    *,
    target: str,
    api_key: str | None,
    timeout: float,
    as_json: bool,
    trust: str | None = None,
    statement: str | None = None,
    theorem: str | None = None,
    allowed_axioms: tuple[str, ...] = (),
    **tls: Any,
) -> int:
    """Check Lean files; print diagnostics like a compiler. Exit 0 only if every file is VALID.
    `statement` is a file holding the reference statement every file must prove.
    `tls`: the client's tls/ca/cert/key arguments."""
    proofs = []
    try:
        reference = Path(statement).read_text(encoding="utf-8") if statement else None
    except (OSError, UnicodeDecodeError) as exc:
        return _usage(f"cannot read the statement {statement}: {getattr(exc, 'strerror', None) or exc}")
    for name in files:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except IsADirectoryError:
            return _usage(f"{name} is a folder; name .lean files (e.g. {name.rstrip('/')}/*.lean)")
        except FileNotFoundError:
            return _usage(f"{name}: no such file")
        except (OSError, UnicodeDecodeError) as exc:
            return _usage(f"cannot read {name}: {getattr(exc, 'strerror', None) or exc}")
        proofs.append(Proof(name if name != "-" else "<stdin>", text, reference, theorem))
    declared = {p.id: theorem_names(p.code) for p in proofs}
    # --trust audit/judge alone audits each file's last theorem; a file that declares none is refused.
    auditing = trust in ("audit", "judge") and reference is None and theorem is None
    sent = [replace(p, theorem_name=declared[p.id][-1]) for p in proofs if declared[p.id]] if auditing else proofs
    down = unreachable(target)
    if down:
        return _usage(down)
    try:
        with KiminaClient(target, api_key, **tls) as client:
            got = client.verify(sent, timeout=timeout, trust=trust, allowed_axioms=allowed_axioms) if sent else []
    except (KiminaError, ValueError, OSError) as exc:
        return _usage(error_line(exc, target, uses_tls(tls), api_key))
    answered = {r.id: r for r in got}
    results = [
        answered.get(p.id) or not_checked(p.id, f"{NO_THEOREM}: --trust {trust} has none to audit") for p in proofs
    ]
    warnings = {r.id: [NO_THEOREM_WARNING] if r.ok and not declared[r.id] else [] for r in results}
    if as_json:
        print(
            json.dumps([result_json(r) | {"warnings": warnings[r.id]} for r in results], indent=2, ensure_ascii=False)
        )
    else:
        for r in results:
            for warning in warnings[r.id]:
                print(f"{r.id}: warning: {warning}")
            for m in r.messages:
                print(f"{r.id}:{m.line}:{m.column}: {m.severity}: {m.text}")
            if r.error:
                print(f"{r.id}: error: {r.error}")
            if r.reason:
                print(f"{r.id}: untrusted: {r.reason}")
            for name, axioms in (r.axioms or {}).items():
                print(f"{r.id}: {name} depends on axioms: [{', '.join(axioms)}]")
            print(f"{r.id}: {r.verdict.name} ({r.time:.2f} s)")
    return 0 if all(r.ok for r in results) else 1


def _usage(message: str, command: str = "kimina-grpc") -> int:
    print(f"{command}: {message}", file=sys.stderr)
    return 2


def _require_server(target: str) -> None:
    down = unreachable(target)
    if down:
        raise UsageError(down)


def bench(
    *,
    target: str,
    api_key: str | None,
    dataset: str,
    split: str,
    n: int | None,
    id_column: str | None,
    code_column: str | None,
    timeout: float,
    window: int,
    output: Path,
    trust: str | None = None,
    statement_column: str | None = None,
    cache: bool = True,
    **tls: Any,
) -> int:
    """`kimina-grpc bench`: exit 2 with one line for anything that stops the run. The dataset is read
    first, then the server is looked for (one connection attempt), then the proofs are streamed."""
    for flag, value, least in (("--n", n, 1), ("--window", window, 1)):
        if value is not None and value < least:
            return _usage(f"{flag} must be at least {least} (got {value})", "kimina-grpc bench")
    if timeout <= 0:
        return _usage(f"--timeout must be more than 0 seconds (got {timeout:g})", "kimina-grpc bench")
    try:
        proofs = load_proofs(dataset, split, n, id_column, code_column, statement_column)
        _require_server(target)
        with KiminaClient(target, api_key, **tls) as client:
            run_bench(
                client,
                dataset=dataset,
                proofs=proofs,
                timeout=timeout,
                window=window,
                output=output,
                trust=trust,
                cache=cache,
            )
    except (UsageError, ValueError, OSError, KiminaError) as exc:
        return _usage(error_line(exc, target, uses_tls(tls), api_key), "kimina-grpc bench")
    return 0
