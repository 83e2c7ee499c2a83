"""`kimina-grpc check --trust ... --statement FILE` and `bench --trust` with the stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimina_grpc.cli import main
from kimina_grpc.client import KiminaClient, Proof, Verdict

from .helpers.server import threaded_app

STATEMENT = "theorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := by sorry\n"
HONEST = "import Mathlib\n\ntheorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := by omega\n"
HIJACK = (
    "import Mathlib\n\n-- fake: hijack-print-axioms\naxiom cheat : False\n"
    "theorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := cheat.elim\n-- fake: axioms t cheat\n"
)


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    with threaded_app(max_repls=2) as (app, _):
        yield f"127.0.0.1:{app.port}"


def test_check_with_trust_and_statement(target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "stmt.lean").write_text(STATEMENT)
    (tmp_path / "honest.lean").write_text(HONEST)
    (tmp_path / "hijack.lean").write_text(HIJACK)
    (tmp_path / "weaker.lean").write_text(HONEST.replace(": x = 3", ": x ≤ 3"))
    stmt, honest, hijack, weaker = (
        str(tmp_path / n) for n in ("stmt.lean", "honest.lean", "hijack.lean", "weaker.lean")
    )
    assert main(["check", hijack, "--trust", "audit", "--statement", stmt, "--target", target]) == 0
    assert f"{hijack}: VALID" in capsys.readouterr().out  # the audit's documented limit
    assert main(["check", honest, hijack, "--trust", "judge", "--statement", stmt, "--target", target]) == 1
    out = capsys.readouterr().out
    assert f"{honest}: VALID" in out and f"{honest}: t depends on axioms: []" in out
    assert f"{hijack}: untrusted: axioms: t depends on cheat" in out and f"{hijack}: UNTRUSTED" in out
    assert main(["check", weaker, "--trust", "audit", "--statement", stmt, "--json", "--target", target]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data[0]["verdict"] == "UNTRUSTED" and "x ≤ 3" in data[0]["reason"] and "x = 3" in data[0]["reason"]
    # native_decide: rejected unless its axiom is allowed.
    (tmp_path / "nd.lean").write_text(
        "theorem t : 2 ^ 10 = 1024 := by native_decide\n-- fake: axioms t Lean.ofReduceBool\n"
    )
    nd = str(tmp_path / "nd.lean")
    assert main(["check", nd, "--trust", "judge", "--theorem", "t", "--target", target]) == 1
    capsys.readouterr()
    allow = ["--allow-axiom", "Lean.ofReduceBool"]
    assert main(["check", nd, "--trust", "audit", "--theorem", "t", *allow, "--target", target]) == 0
    # No theorem named: each file's own (last) theorem is audited.
    assert main(["check", honest, nd, "--trust", "audit", "--target", target]) == 1
    out = capsys.readouterr().out
    assert f"{honest}: t depends on axioms: []" in out and f"{nd}: UNTRUSTED" in out


def test_client_streams_with_trust(target: str) -> None:
    with KiminaClient(target) as client:
        proofs = [Proof("honest", HONEST, STATEMENT), Proof("hijack", HIJACK, STATEMENT)]
        got = {r.id: r for r in client.verify_stream(proofs, trust="judge")}
    assert got["honest"].verdict is Verdict.VALID and got["honest"].axioms == {"t": ()}
    assert got["hijack"].verdict is Verdict.UNTRUSTED and got["hijack"].axioms == {"t": ("cheat",)}


def test_bench_reports_the_untrusted_share(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = tmp_path / "proofs.jsonl"
    rows = [
        {"id": f"p{i}", "full_proof": HIJACK if i % 4 == 0 else HONEST, "formal_statement": STATEMENT}
        for i in range(20)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out_dir = tmp_path / "report"
    args = ["bench", "--dataset", str(data), "--output", str(out_dir), "--target", target]
    assert (
        main([*args, "--code-column", "full_proof", "--trust", "judge", "--statement-column", "formal_statement"]) == 0
    )
    printed = capsys.readouterr().out
    assert "UNTRUSTED           5   25.0 %" in printed
    report = json.loads((out_dir / "report.json").read_text())
    assert report["verdicts"]["UNTRUSTED"] == 5 and report["verdicts"]["VALID"] == 15 and report["trust"] == "judge"
