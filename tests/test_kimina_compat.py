"""Coming from Kimina: a script written for kimina-client runs with only its import line and target
changed; URLs where a gRPC address belongs get a one-line hint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimina_grpc.cli import main
from kimina_grpc.client import CheckResponse, KiminaClient, Snippet, Verdict, results_to_dataset, results_to_rows

from .helpers.server import threaded_app

# As a Kimina user writes it (kimina-client's README and run_benchmark).
KIMINA_SCRIPT = """\
from kimina_client import KiminaClient, Snippet

client = KiminaClient(api_url="http://localhost:8000")

response = client.check("import Mathlib\\ntheorem one : 1 = 1 := by\\n  rfl", timeout=60, show_progress=False)
print("single", len(response.results), response.results[0].error or None)

snippets = [
    Snippet(id="good", code="import Mathlib\\ntheorem t : True := by\\n  trivial"),
    Snippet(id="bad", code="import Mathlib\\ntheorem t : True := by\\n  -- fake: error unknown tactic"),
]
response = client.check(
    snippets, timeout=60, debug=True, reuse=False, infotree="original", batch_size=8, max_workers=5,
    show_progress=False,
)
for result in response.results:
    print("snippet", result.id, result.time >= 0, result.error or None)

codes = [{"custom_id": "c1", "proof": "theorem a : True := trivial"}, {"custom_id": "c2", "proof": "-- fake: sorry"}]
print("codes", [r.id for r in client.check(codes, timeout=30, show_progress=False).results])

client.run_benchmark(dataset_name=DATASET, split="train", n=12, batch_size=4, max_workers=2, timeout=60,
                     reuse=True, show_progress=False)
"""


# The rest of kimina-client's surface, as its README and sources use it: the async client and its
# run_benchmark, positional arguments, the constructor's HTTP keywords, Infotree, the result helpers.
KIMINA_ASYNC_SCRIPT = """\
import asyncio
import time

from kimina_client import AsyncKiminaClient, Infotree, KiminaClient, Snippet, SnippetStatus


async def main():
    client = AsyncKiminaClient(api_url="http://localhost:8000", http_timeout=600, n_retries=3)
    await client.test()
    bad = "theorem x : 1 = 2 := by\\n  -- fake: error no"
    snips = [Snippet(id="ok", code="#check Nat"), Snippet(id="err", code=bad)]
    start = time.time()
    response = await client.check(snips, 60, True, True, Infotree.original, 8, 5, False)
    for r in response.results:
        print("async", r.id, r.analyze().status == SnippetStatus.valid, r.analyze().status.value)
    first = response.results[1].response["messages"][0]
    print("messages", first["severity"], first["data"], first["pos"])
    response.analyze(time.time() - start)
    await client.run_benchmark(dataset_name=DATASET, n=6, show_progress=False)
    await client.close()


asyncio.run(main())

client = KiminaClient("http://localhost:8000", None, {"X-Request-Source": "script"}, 600, 3)
client.test()
snippet = Snippet.from_code("theorem y : True := by\\n  -- fake: sorry")
print("dump", sorted(snippet.model_dump()))
response = client.check([snippet], 60, True)
print("sync", response.results[0].analyze().status.value, response.results[0].response["sorries"][0]["goal"] != "")
batch = client.api_check([Snippet(id="one", code="theorem z : True := trivial")], 30, False, True, None, True)
print("api_check", batch.results[0].id, batch.results[0].analyze().status.value)
client.run_benchmark(DATASET, "train", 4, 2, 2, 60, True, False)
"""


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    with threaded_app(max_repls=2) as (app, _):
        yield f"127.0.0.1:{app.port}"


def run_kimina_script(kimina_script: str, target: str, tmp_path: Path, rows: list[dict[str, str]]) -> list[str]:
    """The script with only its import line and target changed, on a local dataset (DATASET); its stdout."""
    data = tmp_path / "proofs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    script = kimina_script.replace("from kimina_client import", "from kimina_grpc.client import").replace(
        '"http://localhost:8000"', repr(target)
    )
    assert script.count("\n") == kimina_script.count("\n")  # nothing else changed
    run = subprocess.run(
        [sys.executable, "-c", f"DATASET = {str(data)!r}\n" + script],
        cwd=tmp_path,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1"},
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def test_a_kimina_script_runs_with_its_import_and_target_changed(target: str, tmp_path: Path) -> None:
    rows = [
        {"problem_id": f"p{i}", "full_proof": "-- fake: sorry" if i % 3 == 0 else "theorem x : True := trivial"}
        for i in range(20)
    ]
    out = run_kimina_script(KIMINA_SCRIPT, target, tmp_path, rows)
    assert out[:5] == ["single 1 None", "snippet good True None", "snippet bad True None", "codes ['c1', 'c2']", ""]
    assert out[5] == next(line for line in out if line.startswith("12 proofs in"))
    report = json.loads((tmp_path / "bench-report" / "report.json").read_text())
    assert report["proofs"] == 12 and report["verdicts"]["SORRY"] == 4 and report["verdicts"]["VALID"] == 8


def test_a_kimina_async_script_with_its_result_helpers_runs_unchanged(target: str, tmp_path: Path) -> None:
    rows = [{"id": f"p{i}", "code": "theorem x : True := trivial"} for i in range(6)]
    out = run_kimina_script(KIMINA_ASYNC_SCRIPT, target, tmp_path, rows)
    assert out[:3] == [
        "async ok True valid",
        "async err False lean_error",
        "messages error no {'line': 2, 'column': 0}",
    ]
    assert out[3].startswith("2 snippets: valid 1, sorry 0, lean_error 1") and out[4].startswith("Lean time: total")
    assert any(line.startswith("6 proofs in") for line in out) and any(line.startswith("4 proofs in") for line in out)
    assert "dump ['code', 'id']" in out and "sync sorry True" in out and "api_check one valid" in out


def test_the_kimina_result_shapes() -> None:
    from kimina_grpc.client._types import Message, Result

    def result(verdict: Verdict, error: str = "", messages: tuple[Message, ...] = ()) -> Result:
        return Result("i", verdict, messages, (), 1.5, error, None, None)

    info = Message("info", 1, 0, 1, 6, "Nat : Type")
    assert result(Verdict.VALID, messages=(info,)).response == {
        "messages": [
            {
                "severity": "info",
                "pos": {"line": 1, "column": 0},
                "endPos": {"line": 1, "column": 6},
                "data": "Nat : Type",
            }
        ]
    }
    assert result(Verdict.REPL_ERROR, "Unknown environment.").response == {"message": "Unknown environment."}
    assert result(Verdict.TIMEOUT, "timed out").response is None
    statuses = {v: result(v).analyze() for v in Verdict if v is not Verdict.UNSPECIFIED}
    assert {v.name: (a.status.value, a.time) for v, a in statuses.items()} == {
        "VALID": ("valid", 1.5),
        "INVALID": ("lean_error", 1.5),
        "SORRY": ("sorry", 1.5),
        "TIMEOUT": ("timeout_error", None),
        "OUT_OF_MEMORY": ("server_error", None),
        "REPL_ERROR": ("repl_error", 1.5),
        "NOT_CHECKED": ("server_error", None),
        "UNTRUSTED": ("lean_error", 1.5),
    }
    merged = CheckResponse.merge([CheckResponse([result(Verdict.VALID)]), CheckResponse([result(Verdict.SORRY)])])
    assert [r.verdict for r in merged] == [Verdict.VALID, Verdict.SORRY]


def test_check_keeps_input_order_and_reports_our_verdicts(target: str) -> None:
    with KiminaClient(api_url=target) as client:
        snips = [Snippet(id=f"s{i}", code=f"-- fake: sleep {0.05 * (5 - i)}") for i in range(5)]
        got = client.check([*snips, {"id": "k", "code": "-- fake: error e"}], max_workers=1, batch_size=2)
        assert isinstance(got, CheckResponse) and len(got) == 6
        assert [r.id for r in got] == ["s0", "s1", "s2", "s3", "s4", "k"]
        assert got[5].verdict is Verdict.INVALID and all(r.ok for r in got.results[:5])
        with pytest.raises(ValueError, match="unique"):
            client.check([Snippet("x", "a"), Snippet("x", "b")])
        rows = results_to_rows(got)
        assert rows[5]["verdict"] == "INVALID" and rows[5]["first_error"] == "e" and rows[0]["ok"] is True
        table = results_to_dataset(got)
        assert table.num_rows == 6 and table[5]["messages"][0]["text"] == "e"


def test_verify_accepts_a_dataset_with_its_column_names(target: str) -> None:
    import datasets

    data = datasets.Dataset.from_list(
        [{"name": "a", "lean4_code": "theorem a : True := trivial"}, {"name": "b", "lean4_code": "-- fake: sorry"}]
    )
    with KiminaClient(target) as client:
        assert [(r.id, r.verdict.name) for r in client.verify(data)] == [("a", "VALID"), ("b", "SORRY")]
        named = client.verify(data, id_column="lean4_code", code_column="name")  # named columns win
        assert [r.id for r in named] == ["theorem a : True := trivial", "-- fake: sorry"]
        with pytest.raises(ValueError, match="not a column"):
            client.verify(data, code_column="proof")


def test_an_http_url_target_is_a_one_line_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=r"speaks gRPC, not HTTP: .* e\.g\. localhost:50051"):
        KiminaClient("http://localhost:8000")
    proof = tmp_path / "p.lean"
    proof.write_text("theorem t : True := trivial\n")
    assert main(["check", str(proof), "--target", "http://localhost:8000"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "speaks gRPC, not HTTP" in err[0]
    assert main(["health", "--target", "https://lean.example.org"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "e.g. lean.example.org:50051" in err[0]


def test_a_kimina_env_file_is_read_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kimina_grpc.settings import Settings

    env = tmp_path / ".env"  # Kimina's README defaults
    env.write_text(
        "LEAN_SERVER_HOST=0.0.0.0\nLEAN_SERVER_PORT=8000\nLEAN_SERVER_LOG_LEVEL=INFO\nLEAN_SERVER_ENVIRONMENT=dev\n"
        "LEAN_SERVER_LEAN_VERSION=v4.15.0\nLEAN_SERVER_MAX_REPLS=\nLEAN_SERVER_MAX_REPL_USES=-1\n"
        "LEAN_SERVER_MAX_REPL_MEM=8G\nLEAN_SERVER_MAX_WAIT=60\nLEAN_SERVER_INIT_REPLS={}\n"
    )
    monkeypatch.delenv("LEAN_SERVER_MAX_REPLS", raising=False)
    s = Settings(_env_file=str(env))  # type: ignore[call-arg]
    assert (s.port, s.max_repl_uses, s.max_repl_mem, s.max_wait, s.init_repls) == (8000, 0, 8 << 30, 60, {})


def test_the_api_key_comes_from_the_environment_as_with_kimina(monkeypatch: pytest.MonkeyPatch) -> None:
    with threaded_app(api_key="sekret") as (app, _):
        monkeypatch.setenv("LEAN_SERVER_API_KEY", "sekret")
        with KiminaClient(f"127.0.0.1:{app.port}") as client:
            assert client.check("theorem t : True := trivial").results[0].ok
