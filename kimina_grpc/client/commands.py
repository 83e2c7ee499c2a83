"""`kimina-grpc check` and `kimina-grpc bench`: client-side commands on the Python client."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import statistics
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc

from kimina_grpc.client._kimina import Streams
from kimina_grpc.client._sync import KiminaClient
from kimina_grpc.client._types import (
    CODE_COLUMNS,
    ID_COLUMNS,
    KiminaError,
    Proof,
    Result,
    handshake_failed,
    pick_column,
)
from kimina_grpc.verdict import Verdict

DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class UsageError(Exception):
    """A mistake in what the caller asked for: one line, exit 2."""


def error_line(exc: Exception, target: str, tls: bool) -> str:
    """The one line for a failed command. A server that cannot be reached reads the same in check,
    bench and health, with a hint when TLS is the likely cause (gRPC only says "Socket closed" or
    names an OpenSSL error)."""
    first = str(exc).splitlines()[0]
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
    try:
        with KiminaClient(target, api_key, **tls) as client:
            results = client.verify(proofs, timeout=timeout, trust=trust, allowed_axioms=allowed_axioms)
    except (KiminaError, ValueError, OSError) as exc:
        return _usage(error_line(exc, target, uses_tls(tls)))
    if as_json:
        print(json.dumps([_result_json(r) for r in results], indent=2, ensure_ascii=False))
    else:
        for r in results:
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


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
    **tls: Any,
) -> int:
    """`kimina-grpc bench`: exit 2 with one line for anything that stops the run."""
    for flag, value, least in (("--n", n, 1), ("--window", window, 1)):
        if value is not None and value < least:
            return _usage(f"{flag} must be at least {least} (got {value})", "kimina-grpc bench")
    if timeout <= 0:
        return _usage(f"--timeout must be more than 0 seconds (got {timeout:g})", "kimina-grpc bench")
    try:
        with KiminaClient(target, api_key, **tls) as client:
            run_bench(
                client,
                dataset=dataset,
                split=split,
                n=n,
                id_column=id_column,
                code_column=code_column,
                timeout=timeout,
                window=window,
                output=output,
                trust=trust,
                statement_column=statement_column,
            )
    except (UsageError, ValueError, OSError, KiminaError) as exc:
        return _usage(error_line(exc, target, uses_tls(tls)), "kimina-grpc bench")
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
) -> dict[str, Any]:
    """Stream a dataset's proofs through the server; print a summary (the share of each verdict,
    UNTRUSTED included), write a JSON report and a PNG; return the report."""
    if n is not None and n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    from tqdm import tqdm

    proofs = load_proofs(dataset, split, n, id_column, code_column, statement_column)
    sent_at: dict[str, float] = {}

    def source() -> Any:
        for p in proofs:
            sent_at[p.id] = time.monotonic()
            yield p

    results: list[Result] = []
    done_at: list[float] = []
    latencies: list[float] = []
    start = time.monotonic()
    with tqdm(total=len(proofs), unit="proof", disable=not progress) as bar:
        for r in client.verify_stream(source(), timeout=timeout, window=window, reuse=reuse, trust=trust):
            now = time.monotonic()
            results.append(r)
            done_at.append(now - start)
            latencies.append(now - sent_at[r.id])
            bar.update()
    wall = time.monotonic() - start
    counts = Counter(r.verdict.name for r in results)
    lean = [r.time for r in results]
    verdicts = {v.name: counts.get(v.name, 0) for v in Verdict if v is not Verdict.UNSPECIFIED}
    lat = {q: _percentile(latencies, p) for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
    lean_stats = {"total": sum(lean), "mean": statistics.mean(lean) if lean else 0.0}
    report: dict[str, Any] = {
        "dataset": dataset,
        "trust": trust or "server default",
        "proofs": len(results),
        "wall_seconds": wall,
        "proofs_per_second": len(results) / wall if wall else 0.0,
        "verdicts": verdicts,
        "latency_seconds": lat,
        "lean_seconds": lean_stats,
    }
    if backends := backend_counts(client):
        report["backends"] = backends
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (output / "results.jsonl").write_text("".join(json.dumps(_result_json(r)) + "\n" for r in results))
    _plot(latencies, done_at, output / "report.png")
    print(f"\n{len(results)} proofs in {wall:.1f} s: {report['proofs_per_second']:.1f} proofs/s")
    for name, count in verdicts.items():
        print(f"  {name:<14}{count:>7}  {100 * count / max(1, len(results)):5.1f} %")
    print(f"  latency p50 {lat['p50']:.3f} s  p90 {lat['p90']:.3f} s  p99 {lat['p99']:.3f} s")
    print(f"  Lean seconds: total {lean_stats['total']:.1f}, mean {lean_stats['mean']:.3f}")
    for address, c in backends.items():
        print(f"  backend {address}: {c['answered']} answered, {c['resent']} re-sent elsewhere ({c['state']})")
    print(f"  report: {output / 'report.json'}, plot: {output / 'report.png'}")
    return report


def backend_counts(client: Any) -> dict[str, dict[str, Any]]:
    """A cluster client's per-backend counts (empty for one address)."""
    stats = client.backends() if hasattr(client, "backends") else []
    return {s.address: {k: v for k, v in asdict(s).items() if k != "address"} for s in stats}


def _plot(latencies: list[float], done_at: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.hist(latencies, bins=40, color="#4477aa")
    left.set_xlabel("latency (s)")
    left.set_ylabel("proofs")
    left.set_title("Latency per proof")
    right.plot(sorted(done_at), range(1, len(done_at) + 1), color="#228833")
    right.set_xlabel("time since start (s)")
    right.set_ylabel("proofs completed")
    right.set_title("Completions over time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
