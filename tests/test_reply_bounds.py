"""Replies and results bounded end to end (issue 24 items 1-3, issue 23 item 5): through the real
server with the stand-in REPL, and the pure rules apart."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from kimina_grpc.client import AsyncKiminaClient
from kimina_grpc.repl import ReplyInvalid, Severity, decode, verdict_of
from kimina_grpc.repl.bounds import bound, keep, parse
from kimina_grpc.rewards import trl_reward
from kimina_grpc.service import results
from kimina_grpc.service.server import SERVICE_NAME, App, create_app
from kimina_grpc.testing import serve_process
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc
from kimina_grpc.verdict import Verdict

from .helpers.processes import none_left
from .helpers.server import settings

FAR = 1 << 40


@contextlib.asynccontextmanager
async def running(**kw: Any) -> AsyncIterator[tuple[App, pb_grpc.VerifierServiceAsyncStub]]:
    app = create_app(settings(**{"cache_enabled": False, **kw}))
    await app.start()
    # The caller reads whatever the server may send.
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}", options=[("grpc.max_receive_message_length", -1)])
    try:
        yield app, pb_grpc.VerifierServiceStub(channel)
    finally:
        await channel.close()
        await app.stop()
        await none_left()


def proof(pid: str, *directives: str, **opts: Any) -> pb.Proof:
    body = "\n".join(f"  -- fake: {d}" for d in directives)
    return pb.Proof(id=pid, code=f"theorem t : True := by\n{body}\n  trivial", options=pb.ProofOptions(**opts))


async def stream(stub: pb_grpc.VerifierServiceAsyncStub, proofs: list[pb.Proof]) -> dict[str, pb.ProofResult]:
    async def items() -> AsyncIterator[pb.StreamVerifyRequest]:
        for p in proofs:
            yield pb.StreamVerifyRequest(proof=p)

    got = {}
    async with asyncio.timeout(120):  # before: a lost id kept the stream open for good
        async for response in stub.StreamVerify(items()):
            got[response.result.id] = response.result
    return got


# ---------------------------------------------------------------- issue 24 item 1: the send limit


async def test_a_result_over_the_send_limit_is_cut_and_its_batch_goes_on() -> None:
    limit = 2 << 20
    async with running(max_message_bytes=limit) as (_, stub):
        batch = [proof("fine"), proof("loud", "output 5", "error 1 the first error", "messages 50 20000")]
        reply = await stub.Verify(pb.VerifyRequest(proofs=batch))
        assert reply.ByteSize() <= limit
        fine, loud = reply.results
        assert fine.verdict == pb.VERDICT_VALID and not fine.error
        assert loud.verdict == pb.VERDICT_INVALID  # Lean's verdict, from the whole reply
        assert "cut to fit" in loud.error and "LEAN_SERVER_MAX_MESSAGE_BYTES" in loud.error
        texts = [m.text for m in loud.messages]
        assert "the first error" in texts  # the first error is kept wherever it stands
        assert any("more bytes not shown" in t for t in texts)
        assert "messages not shown" in texts[-1] and texts[-1].startswith("kimina-grpc: ")

        # A stream: the same proof is that proof's note, the stream goes on.
        got = await stream(stub, [proof("loud", "output 5"), proof("after")])
        assert got["after"].verdict == pb.VERDICT_VALID
        assert got["loud"].verdict == pb.VERDICT_VALID and "cut to fit" in got["loud"].error


async def test_an_info_tree_over_the_send_limit_is_dropped_with_a_reason() -> None:
    limit = 2 << 20
    async with running(max_message_bytes=limit) as (_, stub):
        tree = proof("tree", "infotree-mb 4", infotree=pb.INFOTREE_MODE_FULL)
        small = proof("small", "infotree-mb 0.01", infotree=pb.INFOTREE_MODE_FULL)
        reply = await stub.Verify(pb.VerifyRequest(proofs=[tree, small]))
        big, kept = reply.results
        assert big.verdict == pb.VERDICT_VALID and not big.HasField("infotree")
        assert "info tree" in big.error and "dropped" in big.error
        assert kept.HasField("infotree") and not kept.error


async def test_results_that_fit_alone_share_the_batch_limit() -> None:
    limit = 3 << 20
    async with running(max_message_bytes=limit) as (_, stub):
        batch = [proof(f"p{i}", "output 1.2") for i in range(4)]
        reply = await stub.Verify(pb.VerifyRequest(proofs=batch))
        assert reply.ByteSize() <= limit
        assert [r.verdict for r in reply.results] == [pb.VERDICT_VALID] * 4
        assert all("cut to fit" in r.error for r in reply.results)


def test_the_trl_reward_scores_a_group_with_a_loud_completion() -> None:
    """Before: the group's response passed the send limit, and the reward raised RewardServerError
    after checking the loud completion again on every retry."""
    env = {"LEAN_SERVER_MAX_MESSAGE_BYTES": "2M", "LEAN_SERVER_MAX_REPLS": "2", "LEAN_SERVER_CACHE_ENABLED": "false"}
    with serve_process(env) as (_, port):
        reward = trl_reward(target=f"127.0.0.1:{port}")
        try:
            completions = [
                f"```lean4\ntheorem t : True := by\n{body}\n  trivial\n```"
                for body in ("  -- fake: output 3", "", "  -- fake: error no")
            ]
            assert reward(completions=completions, formal_statement="theorem t : True := by sorry") == [1.0, 1.0, 0.0]
        finally:
            reward.close()


@pytest.mark.parametrize("limit", [6_000, 50_000, 300_000, 2_000_000])
@pytest.mark.parametrize(
    "shape",
    [
        {"texts": [3_000_000]},
        {"texts": [100] * 20_000, "error_at": 15_000},
        {"texts": [50_000] * 40, "goals": [50_000] * 40, "tactics": 500, "infotree": 400_000},
        {"texts": [10] * 5, "goals": [5_000_000]},
    ],
)
def test_a_cut_result_fits_its_limit_and_keeps_the_first_error(limit: int, shape: dict[str, Any]) -> None:
    result = pb.ProofResult(id="p", verdict=pb.VERDICT_INVALID)
    for i, n in enumerate(shape["texts"]):
        severity = pb.SEVERITY_ERROR if i == shape.get("error_at") else pb.SEVERITY_INFO
        result.messages.add(severity=severity, text="é" * (n // 2), start=pb.Position(line=i + 1))
    for n in shape.get("goals", []):
        result.sorries.add(goal="g" * n)
    for _ in range(shape.get("tactics", 0)):
        result.tactics.add(tactic="simp", goals="⊢ True" * 50)
    if "infotree" in shape:
        result.infotree = "[" + " " * shape["infotree"] + "]"
    errors = [m.text[:100] for m in result.messages if m.severity == pb.SEVERITY_ERROR]
    results.fit(result, limit)
    assert result.ByteSize() <= limit
    assert result.verdict == pb.VERDICT_INVALID and "cut to fit" in result.error
    if limit >= 50_000:
        assert [m.text[:100] for m in result.messages if m.severity == pb.SEVERITY_ERROR] == errors
        assert result.messages[-1].text.startswith("kimina-grpc: ") or len(result.messages) == len(shape["texts"])


def test_share_keeps_small_results_whole() -> None:
    assert results.share([10, 10, 100, 100], 220) == 100
    assert results.share([10, 10, 100, 100], 120) == 50
    assert results.share([10, 10, 100, 100], 40) == 10
    assert results.share([], 5) == 5


# ---------------------------------------------------------------- issue 24 item 2: reply size and time


async def test_a_reply_past_max_reply_bytes_is_that_proofs_repl_error_not_retried() -> None:
    async with running(max_reply_bytes="1M") as (_, stub):
        batch = [proof("big", "output 3"), proof("fine")]
        reply = await stub.Verify(pb.VerifyRequest(proofs=batch, options=pb.ProofOptions(diagnostics=True)))
        big, fine = reply.results
        assert big.verdict == pb.VERDICT_REPL_ERROR
        assert "LEAN_SERVER_MAX_REPLY_BYTES" in big.error
        assert big.diagnostics.attempts == 1  # the proof's own doing: never checked again
        assert fine.verdict == pb.VERDICT_VALID


async def test_parsing_a_reply_counts_against_the_timeout_and_the_server_wide_budget() -> None:
    async with running(max_decoding_bytes="1M") as (_, stub):
        # Another reply holds the whole budget: this one's parse waits, within its proof's time.
        async with decode.BUDGET.hold(decode.BUDGET.capacity):
            reply = await stub.Verify(
                pb.VerifyRequest(proofs=[proof("waits", "output 0.5", timeout_seconds=1), proof("small")])
            )
        waits, small = reply.results
        assert waits.verdict == pb.VERDICT_TIMEOUT
        assert "could not be read within the proof's timeout" in waits.error
        assert small.verdict == pb.VERDICT_VALID  # small replies are parsed on the loop at once
        assert decode.BUDGET.used == 0
        # The REPL answered and is still in step: the next proof runs.
        again = await stub.Verify(pb.VerifyRequest(proofs=[proof("next", "output 0.5")]))
        assert again.results[0].verdict == pb.VERDICT_VALID


# ---------------------------------------------------------------- issue 24 item 3: many messages


async def test_a_reply_of_many_messages_keeps_a_bounded_count_and_its_verdict() -> None:
    async with running(max_reply_messages=1000) as (_, stub):
        many = proof("many", "messages 30000", "error 9 the only error")
        reply = await stub.Verify(pb.VerifyRequest(proofs=[many]))
        [result] = reply.results
        assert result.verdict == pb.VERDICT_INVALID
        assert len(result.messages) == 1001
        assert any(m.text == "the only error" for m in result.messages)
        assert "29,001 messages" in result.messages[-1].text  # 30,001 less the 1,000 kept


def test_bounding_never_changes_a_verdict() -> None:
    infos = [{"severity": "info", "pos": {"line": 2, "column": 0}, "data": "x"}] * 50
    sorry = {"severity": "warning", "pos": {"line": 3, "column": 0}, "data": "declaration uses `sorry`"}
    error = {"severity": "error", "pos": {"line": 4, "column": 0}, "data": "bad"}
    for messages in ([*infos, sorry], [*infos, error], [*infos, sorry, error], infos):
        raw = json.dumps({"env": 0, "messages": messages})
        full, bounded = parse(raw, 0, 10**6), parse(raw, 0, 5)
        assert verdict_of(bounded) == verdict_of(full)
        assert len(bounded.messages) <= 6
        assert bounded.messages[-1].severity is Severity.INFO and "kimina-grpc" in bounded.messages[-1].data
    assert keep(list(range(10)), 3, (lambda i: i == 7,)) == (0, 1, 7)
    assert bound(parse(raw, 0, 10**6), 100) == parse(raw, 0, 10**6)


# ---------------------------------------------------------------- issue 23 item 5: unrepresentable replies


async def test_a_reply_with_a_position_past_int32_is_that_proofs_repl_error() -> None:
    async with running() as (_, stub):
        batch = [proof("fine"), proof("far", f"position {FAR}"), proof("far-column", f"position 3 {FAR}")]
        reply = await stub.Verify(pb.VerifyRequest(proofs=batch))
        fine, far, column = reply.results
        assert fine.verdict == pb.VERDICT_VALID
        for bad in (far, column):
            assert bad.verdict == pb.VERDICT_REPL_ERROR and "cannot be represented" in bad.error
        got = await stream(stub, [proof("far", f"position {FAR}"), proof("after")])
        assert got["far"].verdict == pb.VERDICT_REPL_ERROR and got["after"].verdict == pb.VERDICT_VALID


async def test_the_client_stream_gets_every_id_of_a_far_position() -> None:
    async with running() as (app, _):
        async with AsyncKiminaClient(f"127.0.0.1:{app.port}") as client:
            codes = [f"theorem t : True := by\n  -- fake: position {FAR}\n  trivial", "theorem u : True := trivial"]
            async with asyncio.timeout(120):
                got = {r.id: r.verdict async for r in client.verify_stream(codes)}
    assert sorted(got.values(), key=lambda v: v.value) == [Verdict.VALID, Verdict.REPL_ERROR]


@pytest.mark.parametrize(
    "field",
    [
        {"messages": [{"severity": "info", "pos": {"line": 1, "column": 0}, "data": "\ud800"}]},
        {"messages": [{"severity": "info", "pos": {"line": -1, "column": 0}, "data": "x"}]},
        {"messages": [{"severity": "info", "pos": {"line": 1, "column": 0}, "endPos": {"line": 1, "column": FAR}}]},
        {"sorries": [{"goal": "x", "pos": {"line": 1, "column": 0}, "proofState": "zero"}]},
        {"tactics": [{"tactic": "x", "goals": "", "pos": {"line": 1, "column": 0}, "usedConstants": [1]}]},
        {"infotree": [{"text": "\udfff"}]},
    ],
)
def test_every_field_is_checked_when_a_reply_is_parsed(field: dict[str, Any]) -> None:
    with pytest.raises(ReplyInvalid):
        parse(json.dumps({"env": 0, **field}))


def test_a_shift_past_int32_is_refused() -> None:
    raw = json.dumps({"env": 0, "messages": [{"severity": "info", "pos": {"line": 5, "column": 0}, "data": ""}]})
    with pytest.raises(ReplyInvalid):
        parse(raw, (1 << 31) - 3)


async def _forgetful(requests: AsyncIterator[pb.StreamVerifyRequest], context: Any) -> AsyncIterator[Any]:
    """A StreamVerify that reads the whole stream and ends it as done without answering anything."""
    async for _ in requests:
        pass
    return
    yield  # an async generator


async def test_the_client_never_waits_forever_for_an_id_the_server_drops() -> None:
    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(
        _forgetful,
        request_deserializer=pb.StreamVerifyRequest.FromString,
        response_serializer=pb.StreamVerifyResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE_NAME, {"StreamVerify": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with AsyncKiminaClient(f"127.0.0.1:{port}", max_attempts=2) as client:
            async with asyncio.timeout(60):
                got = [r async for r in client.verify_stream(["theorem t : True := trivial"])]
    finally:
        await server.stop(0)
    assert [r.verdict for r in got] == [Verdict.NOT_CHECKED]
    assert "without answering" in got[0].error
