"""`kimina-grpc check` and `kimina-grpc bench` against the real server with the stand-in."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimina_grpc.cli import main

from .helpers.server import threaded_app


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    with threaded_app(max_repls=2) as (app, _):
        yield f"127.0.0.1:{app.port}"


def write(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"import Mathlib\n\ntheorem t : True := by\n{body}\n  trivial\n")
    return str(path)


def test_check_exit_codes_and_compiler_style_output(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    valid = write(tmp_path, "valid.lean", "")
    invalid = write(tmp_path, "invalid.lean", "  -- fake: error unsolved goals")
    sorry = write(tmp_path, "sorry.lean", "  -- fake: sorry")
    assert main(["check", valid, "--target", target]) == 0
    assert f"{valid}: VALID" in capsys.readouterr().out
    assert main(["check", valid, invalid, "--target", target]) == 1
    out = capsys.readouterr().out
    assert f"{invalid}:4:0: error: unsolved goals" in out and f"{invalid}: INVALID" in out
    assert main(["check", sorry, "--target", target]) == 1
    out = capsys.readouterr().out
    assert f"{sorry}:4:0: warning: declaration uses `sorry`" in out and f"{sorry}: SORRY" in out
    assert main(["check", valid, sorry, "--json", "--target", target]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [d["verdict"] for d in data] == ["VALID", "SORRY"] and data[1]["sorries"][0]["line"] == 4


def test_check_reads_stdin(target: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("theorem t : True := trivial\n"))
    assert main(["check", "-", "--target", target]) == 0
    assert "<stdin>: VALID" in capsys.readouterr().out


def test_check_unreachable_server_is_exit_2(tmp_path: Path) -> None:
    valid = write(tmp_path, "v.lean", "")
    assert main(["check", valid, "--target", "127.0.0.1:1", "--timeout", "5"]) == 2


def test_bench_on_a_local_jsonl(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = tmp_path / "proofs.jsonl"
    rows = []
    for i in range(220):
        body = "  -- fake: sorry" if i % 10 == 0 else ("  -- fake: error no" if i % 7 == 0 else "")
        rows.append(
            {"problem_id": f"lw_{i}", "full_proof": f"import Mathlib\ntheorem t : True := by\n{body}\n  trivial"}
        )
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out_dir = tmp_path / "report"
    code = main(["bench", "--dataset", str(data), "--n", "200", "--output", str(out_dir), "--target", target])
    assert code == 0
    printed = capsys.readouterr().out
    assert "proofs/s" in printed and "latency p50" in printed
    report = json.loads((out_dir / "report.json").read_text())
    assert report["proofs"] == 200
    assert report["verdicts"]["SORRY"] == 20 and report["verdicts"]["INVALID"] == 26
    assert report["verdicts"]["VALID"] == 154
    results = (out_dir / "results.jsonl").read_text().splitlines()
    assert len(results) == 200 and {json.loads(r)["id"] for r in results} == {f"lw_{i}" for i in range(200)}
    import matplotlib.image

    png = out_dir / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = matplotlib.image.imread(png).shape[:2]
    assert height > 100 and width > 100


def test_bench_unknown_columns_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = tmp_path / "odd.jsonl"
    data.write_text(json.dumps({"alpha": 1, "beta": "x"}) + "\n")
    assert main(["bench", "--dataset", str(data), "--target", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "--code-column" in err and "alpha" in err
