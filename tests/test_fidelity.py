"""What real Lean does that a lenient stand-in would hide (issue 14): the header Lean's parser reads,
header replies that must never become a base environment, replies too deep or too large, replies
forged on the REPL's stdout, memory deaths on a REPL with history, readiness that tells the truth,
and the REPL's strict framing."""

from __future__ import annotations

import asyncio
import json
import random
import shlex
import subprocess
from pathlib import Path

import pytest

from kimina_grpc.repl import Repl, ReplSpec, Verdict, split_header
from kimina_grpc.repl.protocol import command
from kimina_grpc.supervisor import lifecycle as lifecycle_module
from kimina_grpc.testing import fake_repl_command

from .helpers import eventually
from .helpers.headers import CHEAT, HEADER_SHAPES
from .helpers.pool import ARGV, Started, check


@pytest.mark.parametrize(("code", "header", "first_line", "offset", "verdict"), HEADER_SHAPES)
async def test_header_shapes_split_as_lean_reads_them(
    started: Started, code: str, header: str, first_line: str, offset: int, verdict: Verdict
) -> None:
    split = split_header(code)
    assert split.header == header
    assert split.body.split("\n")[0] == first_line
    assert split.line_offset == offset
    sup = await started(max_repls=1)
    assert (await check(sup, code)).verdict is verdict


async def test_a_proof_of_false_on_the_import_line_is_never_valid(started: Started) -> None:
    sup = await started(max_repls=1)
    code = f"import Mathlib {CHEAT}\ntheorem t : False := cheat"
    out = await check(sup, code)
    assert out.verdict is Verdict.SORRY
    assert out.reply is not None and [(m.pos.line, m.pos.column) for m in out.reply.messages] == [(1, 40)]
    # The warm REPL's base environment holds no `cheat`: the next proof using it fails.
    later = await check(sup, "import Mathlib\ntheorem u : False := cheat\n-- fake: error 2 unknown identifier 'cheat'")
    assert later.verdict is Verdict.INVALID


def _table(tmp_path: Path, rows: list[tuple[dict[str, object], dict[str, object]]]) -> tuple[str, ...]:
    table = tmp_path / "table.jsonl"
    table.write_text("".join(json.dumps({"request": q, "reply": a}) + "\n" for q, a in rows))
    return tuple(shlex.split(fake_repl_command("--table", str(table))))


async def test_a_header_reply_with_a_sorry_never_becomes_a_base_environment(started: Started, tmp_path: Path) -> None:
    sorry = {"severity": "warning", "pos": {"line": 1, "column": 0}, "endPos": None, "data": "declaration uses `sorry`"}
    argv = _table(
        tmp_path,
        [
            ({"cmd": "import Cheat"}, {"env": 0, "messages": [sorry]}),
            ({"cmd": "theorem t : False := cheat", "env": 0}, {"env": 1}),
        ],
    )
    sup = await started(max_repls=1, spec=ReplSpec(argv=argv))
    out = await check(sup, "-- a comment\nimport Cheat\ntheorem t : False := cheat")
    assert out.verdict is Verdict.SORRY
    assert out.reply is not None and out.reply.messages[0].pos.line == 2  # on the user's import line
    assert sup.totals.completed == 1 and sum(h.warm for h in sup.state().headers) == 0


@pytest.mark.parametrize("depth", [300, 2000])
async def test_deep_info_trees_are_answered_and_the_pool_goes_on(started: Started, depth: int) -> None:
    sup = await started(max_repls=1)
    out = await check(sup, f"theorem t : True := by\n  -- fake: infotree-depth {depth}\n  trivial", infotree="full")
    assert out.verdict is Verdict.VALID
    assert out.reply is not None and out.reply.infotree is not None
    # Counted as text: the tree is deeper than this process's own json.loads goes.
    assert out.reply.infotree.count('"children"') == depth
    assert '"start": {"line": 2, "column": 0}' in out.reply.infotree  # shifted into the file, not lost
    assert (await check(sup, "theorem ok := 1")).verdict is Verdict.VALID
    assert all(h.busy == 0 for h in sup.state().headers)


async def test_a_reply_too_deep_for_any_parser_is_repl_error_naming_the_bound(started: Started) -> None:
    sup = await started(max_repls=1)
    out = await check(sup, "theorem t : True := by\n  -- fake: infotree-depth 60000\n  trivial", infotree="full")
    assert out.verdict is Verdict.REPL_ERROR and "levels" in out.error
    assert (await check(sup, "theorem ok := 1")).verdict is Verdict.VALID


async def test_any_exception_in_the_check_path_is_answered(started: Started, monkeypatch: pytest.MonkeyPatch) -> None:
    sup = await started(max_repls=1)

    def broken(*args: object, **kw: object) -> object:
        raise ValueError("injected")

    monkeypatch.setattr(lifecycle_module, "verdict_of", broken)
    out = await asyncio.wait_for(check(sup, "theorem t := 1"), 10)
    assert out.verdict is Verdict.REPL_ERROR and "injected" in out.error
    monkeypatch.undo()
    assert (await check(sup, "theorem ok := 1")).verdict is Verdict.VALID
    assert all(h.busy == 0 for h in sup.state().headers)


@pytest.mark.slow  # 40 rounds of REPL restarts: about a minute on a loaded machine
async def test_forged_replies_are_never_passed_on(started: Started) -> None:
    rng = random.Random(11)
    sup = await started(max_repls=2)
    kinds = {
        "forge": ("-- fake: forge-reply", Verdict.REPL_ERROR),
        "forge-guess": ("-- fake: forge-reply 5", Verdict.REPL_ERROR),
        # The whole exchange forged, with the env id the REPL will give, and the proof's own reply
        # (an error) later: the REPL is still at work when the forgery comes.
        "forge-full": ("-- fake: forge-full\n  -- fake: error nope", Verdict.REPL_ERROR),
        "forge-exit": ("-- fake: forge-exit", Verdict.REPL_ERROR),  # the REPL is gone after "its" reply
        "valid": ("", Verdict.VALID),
        "error": ("-- fake: error nope", Verdict.INVALID),
        "sorry": ("-- fake: sorry", Verdict.SORRY),
    }
    for order in range(40):  # each forgery costs a REPL start: 40 orders, 240 proofs
        names = rng.choices(list(kinds), k=6)
        outs = await asyncio.gather(
            *(check(sup, f"theorem t{order}_{i} : True := by\n  {kinds[n][0]}\n  trivial") for i, n in enumerate(names))
        )
        assert [o.verdict for o in outs] == [kinds[n][1] for n in names], names
        for name, out in zip(names, outs, strict=True):
            if name == "forge-exit":
                assert "exited after its reply" in out.error and out.attempts == 2
            elif name.startswith("forge"):
                assert "not" in out.error and "REPL's own" in out.error and out.attempts == 2


async def test_out_of_memory_on_a_repl_with_history_is_retried_on_a_fresh_one(started: Started) -> None:
    sup = await started(max_repls=1, spec=ReplSpec(argv=ARGV, max_memory_bytes=350 << 20))
    assert (await check(sup, "theorem a := by\n  -- fake: alloc 180")).verdict is Verdict.VALID
    out = await check(sup, "theorem b := by\n  -- fake: alloc 180")  # with the 180 MiB the REPL keeps: over
    assert out.verdict is Verdict.VALID and out.attempts == 2 and out.fresh_repl
    out = await check(sup, "theorem c := by\n  -- fake: alloc 700")  # too much even for a fresh REPL
    assert out.verdict is Verdict.OUT_OF_MEMORY


async def test_readiness_tells_why_and_recovers_without_a_restart(started: Started, tmp_path: Path) -> None:
    script = tmp_path / "repl.sh"
    sup = await started(max_repls=1, init_repls={"import A": 1}, spec=ReplSpec(argv=(str(script),)))
    await eventually(lambda: sup.not_ready_reason and "cannot start" in sup.not_ready_reason)
    assert not sup.ready and str(script) in sup.not_ready_reason
    out = await check(sup, "theorem t := 1")
    assert out.verdict is Verdict.REPL_ERROR and "cannot start the REPL" in out.error
    script.write_text(f"#!/bin/sh\nexec {fake_repl_command()}\n")
    script.chmod(0o755)
    await eventually(lambda: sup.ready)
    assert sup.ready and sup.not_ready_reason == ""
    assert (await check(sup, "import A\ntheorem t := 1")).verdict is Verdict.VALID


async def test_a_prewarm_header_lean_rejects_keeps_the_pool_unready(started: Started) -> None:
    sup = await started(max_repls=2, init_repls={"import Missing.X": 1, "import A": 1})
    await eventually(lambda: "Missing" in sup.not_ready_reason)
    assert not sup.ready
    assert "import Missing.X" in sup.not_ready_reason and "unknown module prefix" in sup.not_ready_reason
    assert (await check(sup, "import A\ntheorem t := 1")).verdict is Verdict.VALID  # others are served


def test_the_stand_in_exits_on_a_stray_blank_line_as_the_repl_does() -> None:
    argv = shlex.split(fake_repl_command())
    good = command("theorem t := 1", env=None)
    done = subprocess.run(argv, input=b"\n" + good, capture_output=True, timeout=30, check=False)
    assert done.returncode == 1 and b"Could not parse JSON" in done.stderr and done.stdout == b""
    done = subprocess.run(argv, input=good + b"\n" + good, capture_output=True, timeout=30, check=False)
    assert done.returncode == 1 and done.stdout.count(b'"env"') == 1
    done = subprocess.run(argv, input=b"not json\n\n" + good, capture_output=True, timeout=30, check=False)
    assert done.returncode == 1 and done.stdout == b""


@pytest.mark.parametrize(
    "request_text",
    [
        b'{"cmd": "theorem t := 1", "env": -1}\n\n',  # env is a natural number for the REPL
        b'{"cmd": "theorem t := 1", "env": true}\n\n',
        b'{"cmd": "theorem t := 1", "env": 0.0}\n\n',
        b'{"cmd": "theorem t := 1", "allTactics": "yes"}\n\n',
        b'{"cmd": "theorem t :=\n 1"}\n\n',  # a raw newline in a string: kept by REPL <= v4.21, not JSON
    ],
    ids=["env-negative", "env-bool", "env-float", "flag-not-bool", "raw-newline"],
)
def test_the_stand_in_exits_on_a_request_the_repl_cannot_read(request_text: bytes) -> None:
    done = subprocess.run(
        shlex.split(fake_repl_command()), input=request_text, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 1 and done.stdout == b"" and b"Could not parse" in done.stderr


def test_the_stand_in_numbers_proof_states_as_the_repl_does() -> None:
    done = subprocess.run(
        shlex.split(fake_repl_command()),
        input=command("theorem a := sorry\ntheorem b := sorry") + command("theorem c := sorry", env=0),
        capture_output=True,
        timeout=30,
        check=False,
    )
    replies = [json.loads(block) for block in done.stdout.split(b"\n\n") if block.strip()]
    assert [s["proofState"] for r in replies for s in r["sorries"]] == [0, 1, 2]


async def test_the_stand_in_reads_the_header_as_lean_and_elaborates_the_rest() -> None:
    repl = await Repl.start(ReplSpec(argv=ARGV), "t")
    try:
        reply, _ = await repl.run(command(f"import A {CHEAT}\n-- fake: warning 2 w\nimport B"))
        assert reply.env == 0
        assert [(m.pos.line, m.data) for m in reply.messages] == [
            (1, "declaration uses `sorry`"),
            (2, "w"),
            (3, "invalid 'import' command, it must be used in the beginning of the file"),
        ]
    finally:
        await repl.kill()


async def test_large_replies_do_not_stall_the_event_loop(started: Started) -> None:
    """Not a timing assertion: the loop keeps ticking while a 20 MiB reply is parsed (the ticks are
    counted, not timed), and the reply arrives whole and shifted."""
    sup = await started(max_repls=1)
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0.001)  # the ticker: counts how often the loop gets to run, waits for nothing

    task = asyncio.create_task(ticker())
    # Parsing the reply counts against the proof's timeout: room for a loaded machine's parse.
    code = "\n\ntheorem t := by\n  -- fake: infotree-mb 20\n  trivial"
    out = await check(sup, code, timeout=300, infotree="full")
    done = True
    await task
    assert out.verdict is Verdict.VALID and out.reply is not None and out.reply.infotree is not None
    assert len(out.reply.infotree) > 10 << 20 and '"line": 4' in out.reply.infotree[:2000]
    assert ticks > 20


async def test_the_one_line_cheat_is_not_valid_through_verify_and_stream_verify() -> None:
    from kimina_grpc.v1 import verifier_pb2 as pb
    from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

    from .helpers.server import running

    code = f"import Mathlib {CHEAT}\ntheorem t : False := cheat"
    async with running(max_repls=1) as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        reply = await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id="cheat", code=code)]))
        streamed = [
            r.result
            async for r in stub.StreamVerify(
                iter([pb.StreamVerifyRequest(proof=pb.Proof(id="s", code=code, options=pb.ProofOptions(cache=False)))])
            )
        ]
        for result in (reply.results[0], streamed[0]):
            assert result.verdict == pb.VERDICT_SORRY
            assert [(m.start.line, m.start.column) for m in result.messages] == [(1, 40)]


async def test_a_deep_info_tree_is_answered_and_kept_by_the_result_cache() -> None:
    from kimina_grpc.v1 import verifier_pb2 as pb
    from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

    from .helpers.server import running

    code = "import A\n\ntheorem t : True := by\n  -- fake: infotree-depth 2000\n  trivial"
    opts = pb.ProofOptions(infotree=pb.INFOTREE_MODE_FULL, diagnostics=True)
    async with running(max_repls=1) as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        for cached in (False, True):
            reply = await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id="d", code=code, options=opts)]), timeout=30)
            result = reply.results[0]
            assert result.verdict == pb.VERDICT_VALID and result.diagnostics.from_cache is cached
            assert result.infotree.count('"children"') == 2000


async def test_a_cancelled_large_decode_never_answers_the_next_one() -> None:
    from kimina_grpc.repl import decode
    from kimina_grpc.testing.fake_messages import big_tree

    big = json.dumps({"env": 7, "messages": [], "infotree": big_tree(20, 1)}).encode()
    deep = b'{"env": 1, "infotree": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    task = asyncio.create_task(decode.decode(big))
    # Kept: lets the decode of the big reply get under way, so the cancel lands mid-decode (the
    # helper shows no state to wait on). Either way the next decode must get its own answer.
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    reply = await asyncio.wait_for(decode.decode(deep), 30)
    assert reply.env == 1  # its own answer, not the cancelled one's
    await decode.shutdown()


async def test_a_repl_that_exits_before_answering_is_not_ready_without_pre_warm(
    started: Started, tmp_path: Path
) -> None:
    """`lake env /wrong/repl` starts (lake exists), prints an error and exits: with nothing to
    pre-warm the pool still finds out at start-up, says why, and turns ready once it is fixed."""
    script = tmp_path / "repl.sh"
    script.write_text("#!/bin/sh\necho 'error: no such file or directory (error code: 2, /wrong/repl)' >&2\nexit 1\n")
    script.chmod(0o755)
    sup = await started(max_repls=1, spec=ReplSpec(argv=(str(script),)))
    await eventually(lambda: sup.not_ready_reason.startswith("the REPL exited"))
    assert not sup.ready and "/wrong/repl" in sup.not_ready_reason and str(script) in sup.not_ready_reason
    script.write_text(f"#!/bin/sh\nexec {fake_repl_command()}\n")
    await eventually(lambda: sup.ready)
    assert sup.ready and (await check(sup, "theorem t := 1")).verdict is Verdict.VALID


async def test_a_module_file_is_read_as_one_from_lean_4_22(started: Started) -> None:
    spec = ReplSpec(argv=ARGV, env={"KIMINA_FAKE_LEAN_VERSION": "v4.22.0"})
    sup = await started(max_repls=1, spec=spec)
    code = "module\n\npublic import Mathlib\nmeta import Aesop\ntheorem t : True := trivial"
    assert (await check(sup, code)).verdict is Verdict.VALID


def test_the_stand_in_reports_what_leans_tokenizer_refuses_outside_comments_and_strings() -> None:
    from kimina_grpc.testing.fake_syntax import lexical_errors

    assert lexical_errors('-- a\ttab\n/- and\t/- nested\t-/ -/\ndef s := "\t"\r\n', 1) == []
    [error] = lexical_errors("theorem t : True := by\n\ttrivial", 3)
    assert (error["pos"], error["data"]) == (
        {"line": 4, "column": 0},
        "tabs are not allowed; please configure your editor to expand them",
    )


async def test_the_repls_channels_cannot_be_opened_again_by_what_a_proof_starts(started: Started) -> None:
    """Through /proc/self/fd a pipe's end opens again in either direction (to steal the REPL's
    replies or write into its requests); the REPL's stdin and stdout are sockets, which do not."""
    sup = await started(max_repls=1)
    out = await check(sup, "theorem t := 1\n-- fake: reopen 0 w\n-- fake: reopen 1 r")
    said = [m.data for m in out.reply.messages] if out.reply else []
    assert len(said) == 2 and all("No such device or address" in text for text in said), said
