"""A benchmark run: proofs from a hub dataset or a local file, streamed through any client with a
blocking `verify_stream`, and the report written (`kimina-grpc bench`, `run_benchmark`). It knows
no client class: the clients call it, never the other way round."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from kimina_grpc.client import bench_report
from kimina_grpc.client._rows import CODE_COLUMNS, ID_COLUMNS, Proofs, pick_column
from kimina_grpc.client._types import Proof, Result


class Streams(Protocol):
    """What run_bench needs of a client: a blocking verify_stream."""

    def verify_stream(self, proofs: Proofs, **kw: Any) -> Iterator[Result]: ...


DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class UsageError(Exception):
    """A mistake in what the caller asked for: one line, exit 2."""


def result_json(r: Result) -> dict[str, Any]:
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
    (output / "results.jsonl").write_text("".join(json.dumps(result_json(r)) + "\n" for r in results))
    bench_report.plot(latencies, done_at, output / "report.png")
    bench_report.print_summary(report, output)
    return report


def backend_counts(client: Any) -> dict[str, dict[str, Any]]:
    """A cluster client's per-backend counts (empty for one address)."""
    stats = client.backends() if hasattr(client, "backends") else []
    return {s.address: {k: v for k, v in asdict(s).items() if k != "address"} for s in stats}
