"""ExportAst with the stand-in exporter: modules, raw code, failures, timeouts, bounds, cleanup."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from kimina_grpc.client import AsyncKiminaClient
from kimina_grpc.testing import fake_ast_export_command
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers.processes import children
from .helpers.server import running


def ast_settings(project: Path, **kw: Any) -> dict[str, Any]:
    return {"ast_export_command": fake_ast_export_command(), "ast_export_project_dir": project, **kw}


def leftovers(project: Path) -> list[str]:
    return sorted(
        str(p.relative_to(project))
        for p in project.rglob("*")
        if p.is_file() and (p.suffix == ".json" or "KiminaTmp" in str(p))
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "Foo").mkdir()
    (tmp_path / "Foo" / "Bar.lean").write_text("import Mathlib\n\ntheorem foo_bar : True := trivial\ndef x := 1\n")
    (tmp_path / "Slow.lean").write_text("-- fake: sleep 0.4\ndef s := 1\n")
    (tmp_path / "Broken.lean").write_text("-- fake: fail the build broke\n")
    return tmp_path


async def test_modules_nested_and_top_level(project: Path) -> None:
    async with running(**ast_settings(project)) as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        reply = await stub.ExportAst(pb.ExportAstRequest(modules=["Foo.Bar", "Top"], one=False))
        assert [r.module for r in reply.results] == ["Foo.Bar", "Top"]
        tree = json.loads(reply.results[0].ast)
        assert tree["header"] == {"imports": ["Mathlib"], "one": False}
        kinds = [c["node"]["kind"] for c in tree["commands"]]
        assert kinds == ["Lean.Parser.Command.theorem", "Lean.Parser.Command.def"]
        first = tree["commands"][0]["node"]
        assert first["info"]["original"]["pos"] == len(b"import Mathlib\n\n")
        assert first["args"][1]["ident"] == {"rawVal": "foo_bar", "val": "foo_bar"}
        assert reply.results[0].error == "" and reply.results[0].time_seconds > 0
        assert json.loads(reply.results[1].ast)["commands"]
        assert leftovers(project) == []


async def test_raw_code_is_named_as_requested_and_cleaned_up(project: Path) -> None:
    async with running(**ast_settings(project)) as (_, ch):
        client_reply = await pb_grpc.VerifierServiceStub(ch).ExportAst(
            pb.ExportAstRequest(code="import Mathlib\ntheorem t : 1 = 1 := rfl\n", module="My.Proof")
        )
        item = client_reply.results[0]
        assert item.module == "My.Proof" and item.error == ""
        assert json.loads(item.ast)["commands"][0]["node"]["kind"] == "Lean.Parser.Command.theorem"
        assert "KiminaTmp" not in item.ast
        assert leftovers(project) == [] and not (project / "KiminaTmp").exists()


async def test_lean_errors_in_raw_code_are_reported(project: Path) -> None:
    async with running(**ast_settings(project)) as (_, ch):
        reply = await pb_grpc.VerifierServiceStub(ch).ExportAst(
            pb.ExportAstRequest(code="import Nope\n-- fake: error unknown module prefix 'Nope'\n")
        )
        item = reply.results[0]
        assert item.module == "User.Code" and item.ast == ""
        assert "error: unknown module prefix 'Nope'" in item.error


@pytest.mark.parametrize(
    "request_",
    [
        pb.ExportAstRequest(),
        pb.ExportAstRequest(modules=["A"], code="x"),
        pb.ExportAstRequest(modules=["1Bad"]),
        pb.ExportAstRequest(modules=["a..b"]),
        pb.ExportAstRequest(modules=["Foo."]),
        pb.ExportAstRequest(modules=["../etc/passwd"]),
        pb.ExportAstRequest(code="x", module="not a name"),
        pb.ExportAstRequest(modules=["A"], timeout_seconds=0),
    ],
)
async def test_invalid_requests(project: Path, request_: pb.ExportAstRequest) -> None:
    async with running(**ast_settings(project)) as (_, ch):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await pb_grpc.VerifierServiceStub(ch).ExportAst(request_)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_exporter_failures_are_per_item_errors(project: Path) -> None:
    async with running(**ast_settings(project)) as (_, ch):
        reply = await pb_grpc.VerifierServiceStub(ch).ExportAst(
            pb.ExportAstRequest(modules=["Missing.X", "Broken", "Top"])
        )
        missing, broken, top = reply.results
        assert "unknown module" in missing.error and missing.ast == ""
        assert "the build broke" in broken.error and "exit code 1" in broken.error
        assert top.error == "" and top.ast


async def test_timeout_kills_the_exporter_group_and_the_server_lives(project: Path) -> None:
    async with running(**ast_settings(project)) as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        reply = await stub.ExportAst(pb.ExportAstRequest(code="-- fake: hang\n", timeout_seconds=0.5))
        assert "timeout" in reply.results[0].error
        assert children() == [c for c in children() if "fake_repl" in " ".join(c.cmdline())]  # no exporter left
        ok = await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id="a", code="theorem t : True := trivial")]))
        assert ok.results[0].verdict == pb.VERDICT_VALID
        assert leftovers(project) == []


async def test_concurrency_bound_and_identical_requests(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "ast.log"
    monkeypatch.setenv("KIMINA_FAKE_AST_LOG", str(log))
    for i in range(6):
        (project / f"S{i}.lean").write_text("-- fake: sleep 0.3\ndef s := 1\n")
    async with running(**ast_settings(project, max_ast_jobs=2)) as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        many = stub.ExportAst(pb.ExportAstRequest(modules=[f"S{i}" for i in range(6)]))
        same = [stub.ExportAst(pb.ExportAstRequest(modules=["Slow"])) for _ in range(2)]
        replies = await asyncio.gather(many, *same)
        assert all(r.ast and not r.error for reply in replies for r in reply.results)
    events = sorted((float(t), kind) for kind, _, t in (line.split() for line in log.read_text().splitlines()))
    running_now = most = 0
    for _, kind in events:
        running_now += 1 if kind == "start" else -1
        most = max(most, running_now)
    print(f"\nmost exporters running at once: {most} (LEAN_SERVER_MAX_AST_JOBS=2), {len(events) // 2} exports")
    assert most == 2 and len(events) == 16
    assert leftovers(project) == []


async def test_client_export_ast(project: Path) -> None:
    async with running(**ast_settings(project)) as (app, _):
        async with AsyncKiminaClient(f"127.0.0.1:{app.port}") as client:
            items = await client.export_ast(["Foo.Bar"])
            assert items[0].module == "Foo.Bar" and json.loads(items[0].ast)["commands"]
            items = await client.export_ast(code="def y := 2\n", module="User.Y", timeout=30)
            assert items[0].module == "User.Y" and items[0].error == ""
