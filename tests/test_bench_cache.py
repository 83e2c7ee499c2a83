"""`kimina-grpc bench` twice on one dataset: the second run's answers come from the cache, and the
report says so instead of selling them as Lean's throughput; `--no-cache` measures Lean again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimina_grpc import cli
from kimina_grpc.testing import serve_process

N = 12


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    with serve_process({"LEAN_SERVER_MAX_REPLS": "2"}) as (_, port):
        yield f"127.0.0.1:{port}"


def _bench(target: str, dataset: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[str, dict]:  # type: ignore[type-arg]
    argv = ["bench", "--dataset", str(dataset), "--target", target, "--output", str(out), *extra]
    assert cli.main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.strip().splitlines()
    return printed[0], json.loads((out / "report.json").read_text())


def test_a_second_run_reports_cache_hits_and_no_cache_checks_again(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = tmp_path / "proofs.jsonl"
    rows = [{"id": f"p{i}", "code": f"theorem t{i} : {i} = {i} := rfl"} for i in range(N)]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))

    first, report = _bench(target, dataset, tmp_path / "one", capsys)
    assert report["answered_by"] == {"lean": N, "cache": 0, "shared_check": 0}
    assert first.startswith(f"{N} proofs in ") and f"(Lean checked {N}, 0 from the cache, 0 shared checks)" in first
    assert report["verdicts"]["VALID"] == N and report["cache"] == "on"
    assert set(report["queue_seconds"]) == set(report["check_seconds"]) == {"p50", "p90", "p99"}
    assert report["check_seconds"]["p99"] > 0

    second, report = _bench(target, dataset, tmp_path / "two", capsys)
    assert report["answered_by"] == {"lean": 0, "cache": N, "shared_check": 0}
    assert f"but {N} of {N} answers were not checked by Lean ({N} from the cache, 0 shared checks)" in second
    assert second.endswith("not Lean's throughput; run with --no-cache to measure it")
    assert report["check_seconds"] == {"p50": 0.0, "p90": 0.0, "p99": 0.0}  # nothing Lean ran in this run
    assert report["lean_seconds"]["total"] == 0.0

    third, report = _bench(target, dataset, tmp_path / "three", capsys, "--no-cache")
    assert report["answered_by"] == {"lean": N, "cache": 0, "shared_check": 0} and report["cache"] == "off (--no-cache)"
    assert "not checked by Lean" not in third


def test_identical_proofs_in_flight_are_counted_as_shared_checks(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = tmp_path / "same.jsonl"
    code = "theorem slow : True := by\n  -- fake: sleep 3\n  trivial"  # still running when its copies arrive
    dataset.write_text("".join(json.dumps({"id": f"s{i}", "code": code}) + "\n" for i in range(4)))
    first, report = _bench(target, dataset, tmp_path / "same", capsys)
    assert report["answered_by"] == {"lean": 1, "cache": 0, "shared_check": 3}
    assert "but 3 of 4 answers were not checked by Lean (0 from the cache, 3 shared checks)" in first
