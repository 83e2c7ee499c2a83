"""`kimina-grpc check` and `kimina-grpc bench`: client-side commands on the Python client."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import grpc

from kimina_grpc.client import bench_report
from kimina_grpc.client._kimina import Streams
from kimina_grpc.client._sync import KiminaClient
from kimina_grpc.client._types import (
    CODE_COLUMNS,
    ID_COLUMNS,
    KEY_SOURCES,
    KiminaError,
    Proof,
    Result,
    Unauthenticated,
    handshake_failed,
    not_checked,
    pick_column,
)
from kimina_grpc.client.declared import theorem_names
from kimina_grpc.client.reach import unreachable

DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class UsageError(Exception):
    """A mistake in what the caller asked for: one line, exit 2."""


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
            json.dumps([_result_json(r) | {"warnings": warnings[r.id]} for r in results], indent=2, ensure_ascii=False)
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


def _result_json(r: Result) -> dict[str, Any]:
    data = asdict(r)
    data["verdict"] = r.verdict.name
    return data


def _hub_unreachable() -> str | None:
    """The hub's host when it cannot be reached (no network, a proxy, a firewall), else None: one
    connection attempt, so that an offline run fails in a second instead of after the hub's retries."""
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    try:
        socket.create_connection((host, endpoint.port or (80 if endpoint.scheme == "http" else 443)), timeout=5).close()
    except OSError:
        return host
    return None


def _load(dataset: str, split: str | None) -> Any:
    """The rows of a local file or a hub dataset; UsageError (one line) for what cannot be read."""
    path = Path(dataset).expanduser()
    if path.is_dir():
        raise UsageError(f"{dataset} is a folder; name a .jsonl, .json, .parquet or .csv file")
    if path.exists():
        kind = DATA_SUFFIXES.get(path.suffix)
        if kind is None:
            raise UsageError(f"{dataset}: expected a .jsonl, .json, .parquet or .csv file")
        if split not in (None, "train"):
            raise UsageError(f"--split {split}: a local file is read whole (its one split is train)")
    elif path.suffix in DATA_SUFFIXES or dataset.startswith(("/", "./", "../", "~")):
        # A file name, not a hub name ("owner/name"): say so now rather than after the hub's retries.
        raise UsageError(f"{dataset}: no such file")
    offline = None
    if not path.exists() and not os.environ.get("HF_HUB_OFFLINE") and "datasets" not in sys.modules:
        offline = _hub_unreachable()
        if offline:
            os.environ["HF_HUB_OFFLINE"] = "1"  # read before `datasets` is imported: a cached copy still loads
    import datasets  # the bench extra; imported here so `check` works without it

    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its error lines would come before ours
    try:
        if path.exists():
            with _no_progress_bars(datasets):  # a local file loads in moments
                return datasets.load_dataset(DATA_SUFFIXES[path.suffix], data_files=str(path), split="train")
        return datasets.load_dataset(dataset, split=split or "train")
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = str(exc.__cause__ or exc).splitlines()[0]
        raise UsageError(f"{dataset}: cannot read it as {DATA_SUFFIXES[path.suffix]} ({cause})") from None
    except (OSError, ValueError) as exc:
        if offline:
            raise UsageError(
                f"cannot reach the Hugging Face hub ({offline}) and {dataset} is not in its local cache; "
                "name a local .jsonl, .json, .parquet or .csv file"
            ) from None
        raise UsageError(f"{dataset}: {str(exc).splitlines()[0]}") from None
    finally:
        datasets.logging.set_verbosity(verbosity)


@contextlib.contextmanager
def _no_progress_bars(datasets: Any) -> Iterator[None]:
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()


def load_proofs(  # noqa: PLR0917
    dataset: str,
    split: str | None,
    n: int | None,
    id_column: str | None,
    code_column: str | None,
    statement_column: str | None = None,
) -> list[Proof]:
    """Rows of a hub dataset (`split`, default train) or a local .jsonl/.json/.parquet/.csv file,
    loaded with `datasets` (with `statement_column`, each proof's reference statement)."""
    data = _load(dataset, split)
    columns = list(data.column_names)
    code_col = pick_column(columns, code_column, CODE_COLUMNS, "code", flag="--code-column")
    id_col = (
        pick_column(columns, id_column, ID_COLUMNS, "id", flag="--id-column")
        if id_column or any(c in columns for c in ID_COLUMNS)
        else None
    )
    if statement_column is not None and statement_column not in columns:
        raise ValueError(f"--statement-column {statement_column!r} is not a column; columns: {', '.join(columns)}")
    if n is not None:
        data = data.select(range(min(n, len(data))))
    proofs = []
    seen: set[str] = set()
    for i, row in enumerate(data):
        pid = str(row[id_col]) if id_col else str(i)
        if pid in seen:
            pid = f"{pid}#{i}"
        seen.add(pid)
        statement = str(row[statement_column]) if statement_column else None
        proofs.append(Proof(pid, str(row[code_col]), statement))
    return proofs


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


def run_bench(
    client: Streams,
    *,
    dataset: str,
    split: str | None = None,
    n: int | None = None,
    id_column: str | None = None,
    code_column: str | None = None,
    timeout: float = 60,
    window: int = 64,
    reuse: bool = True,
    progress: bool = True,
    output: Path,
    trust: str | None = None,
    statement_column: str | None = None,
    proofs: list[Proof] | None = None,
    cache: bool = True,
) -> dict[str, Any]:
    """Stream a dataset's proofs (or `proofs`, already loaded from it) through the server; print a
    summary (the share of each verdict, UNTRUSTED included; how many Lean checked), write a JSON
    report and a PNG; return the report. `cache=False`: every proof is checked by Lean."""
    if n is not None and n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    from tqdm import tqdm

    if proofs is None:
        proofs = load_proofs(dataset, split, n, id_column, code_column, statement_column)
    sent_at: dict[str, float] = {}

    def source() -> Any:
        for p in proofs:
            sent_at[p.id] = time.monotonic()
            yield p

    results: list[Result] = []
    done_at: list[float] = []
    latencies: list[float] = []
    options = {"timeout": timeout, "window": window, "reuse": reuse, "trust": trust, "cache": cache}
    start = time.monotonic()
    with tqdm(total=len(proofs), unit="proof", disable=not progress) as bar:
        for r in client.verify_stream(source(), diagnostics=True, **options):
            now = time.monotonic()
            results.append(r)
            done_at.append(now - start)
            latencies.append(now - sent_at[r.id])
            bar.update()
    wall = time.monotonic() - start
    report = bench_report.build(results, latencies, wall, dataset=dataset, trust=trust, cache=cache)
    if backends := backend_counts(client):
        report["backends"] = backends
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (output / "results.jsonl").write_text("".join(json.dumps(_result_json(r)) + "\n" for r in results))
    bench_report.plot(latencies, done_at, output / "report.png")
    bench_report.print_summary(report, output)
    return report


def backend_counts(client: Any) -> dict[str, dict[str, Any]]:
    """A cluster client's per-backend counts (empty for one address)."""
    stats = client.backends() if hasattr(client, "backends") else []
    return {s.address: {k: v for k, v in asdict(s).items() if k != "address"} for s in stats}
