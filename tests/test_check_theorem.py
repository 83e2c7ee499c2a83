"""`kimina-grpc check` on a file that proves nothing: Lean accepts an empty file, so it stays VALID, but the
output says no theorem was found; `check --trust audit` alone requires one (each file's last theorem is
audited by the server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimina_grpc import cli
from kimina_grpc.client.declared import theorem_names
from kimina_grpc.testing import serve_process

WARNING = (
    "warning: no theorem found: Lean accepted the file, but it proves nothing by name "
    "(--trust audit requires a theorem)"
)


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    with serve_process({"LEAN_SERVER_MAX_REPLS": "2"}) as (_, port):
        yield f"127.0.0.1:{port}"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    texts = {
        "empty": "",
        "comments": "import Mathlib\n-- theorem t : True := trivial\n/- theorem u : True := trivial -/\n",
        "proof": "theorem t : True := trivial\n",
        "namespaced": "namespace Foo\n\ntheorem bar : True := trivial\n\nend Foo\n",
    }
    made = {}
    for name, text in texts.items():
        made[name] = tmp_path / f"{name}.lean"
        made[name].write_text(text)
    return made


def test_a_file_without_a_theorem_is_valid_with_a_warning(
    target: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    names = [str(files[k]) for k in ("empty", "comments", "proof")]
    assert cli.main(["check", *names, "--target", target]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{files['empty']}: {WARNING}" in out and f"{files['comments']}: {WARNING}" in out
    assert not any(line.startswith(f"{files['proof']}: warning") for line in out)
    assert [line.split(": ")[1].split()[0] for line in out if " (" in line and "VALID" in line] == ["VALID"] * 3
    assert cli.main(["check", str(files["empty"]), "--target", target, "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "VALID" and result["warnings"] == [WARNING.removeprefix("warning: ")]


def test_trust_audit_alone_requires_a_theorem(
    target: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    names = [str(files[k]) for k in ("empty", "proof", "namespaced")]
    assert cli.main(["check", "--trust", "audit", *names, "--target", target]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"{files['empty']}: error: no theorem found: --trust audit has none to audit" in out
    assert f"{files['empty']}: NOT_CHECKED (0.00 s)" in out
    assert any(line.startswith(f"{files['proof']}: VALID") for line in out)
    assert any(line.startswith(f"{files['namespaced']}: Foo.bar depends on axioms") for line in out)
    assert any(line.startswith(f"{files['namespaced']}: VALID") for line in out)
    assert cli.main(["check", "--trust", "audit", str(files["proof"]), "--target", target]) == 0


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", []),
        ('def s := "theorem z : True := trivial"', []),
        ("/- /- theorem a -/ theorem b -/\ntheorem c : True := trivial", ["c"]),
        (
            "namespace A.B\nsection\nlemma x : True := trivial\nend\nend A.B\ntheorem _root_.y : True := trivial",
            ["A.B.x", "y"],
        ),
        ("@[simp] protected theorem P.q : True := trivial", ["P.q"]),
    ],
)
def test_the_declared_theorems_as_the_text_names_them(text: str, names: list[str]) -> None:
    assert theorem_names(text) == names
