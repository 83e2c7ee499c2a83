"""kimina-client's API on ours: its names, argument orders and result helpers, so that a script
written for kimina-client runs with its import line and target changed (docs/migrating-from-kimina.md, "Coming from
Kimina"). Nothing here decides a verdict: it renames the server's.

What stays different: `r.error` is "" rather than None when there is none, `r.diagnostics` is our
Diagnostics rather than Kimina's dict, and `health()` returns a bool.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kimina_grpc.client._kimina_results import DEFAULT_DATASET
from kimina_grpc.client.benchmark import Streams, run_bench


def client_options(
    api_key: str | None, headers: Mapping[str, str] | None, n_retries: int | None
) -> tuple[str | None, int | None]:
    """Kimina's constructor keywords in our terms: (api key, attempts). An `Authorization: Bearer`
    or `X-API-Key` header is the key, as our server reads it; other HTTP headers mean nothing to a
    gRPC server and are dropped; `n_retries` is Kimina's number of attempts. Kimina's
    `http_timeout` bounded one HTTP request; here per-proof timeouts bound the work, so it is
    dropped too."""
    for name, value in (headers or {}).items():
        if api_key is None and name.lower() == "authorization" and value.lower().startswith("bearer "):
            api_key = value[len("bearer ") :].strip()
        elif api_key is None and name.lower() == "x-api-key":
            api_key = value.strip()
    return api_key, n_retries


def run_benchmark(  # noqa: PLR0917  (Kimina's positional order)
    client: Streams,
    dataset_name: str = DEFAULT_DATASET,
    split: str | None = None,
    n: int = 100,
    batch_size: int = 8,
    max_workers: int = 5,
    timeout: int = 60,
    reuse: bool = True,
    show_progress: bool = True,
    output: str | Path = "bench-report",
) -> dict[str, Any]:
    """Kimina's `run_benchmark` on `kimina-grpc bench` (the bench extra), for both clients: a hub
    dataset (`split`, default train) or a local .jsonl/.json/.parquet/.csv file; `batch_size` x
    `max_workers` proofs in flight, as with Kimina; prints the summary, writes report.json,
    results.jsonl and report.png under `output`, returns the report."""
    from kimina_grpc import extras

    extras.require("bench", "run_benchmark")

    return run_bench(
        client,
        dataset=dataset_name,
        split=split,
        n=n,
        timeout=timeout,
        window=max(1, batch_size * max_workers),
        reuse=reuse,
        progress=show_progress,
        output=Path(output),
    )
