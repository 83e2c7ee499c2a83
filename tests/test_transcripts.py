"""The REPL's own recorded transcripts through the parser, the driver and the stand-in's replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kimina_grpc.repl import Repl, ReplSpec, Verdict, verdict_of
from kimina_grpc.repl.protocol import parse_reply, reply_to_json
from kimina_grpc.testing import fake_repl_command
from kimina_grpc.testing.fake_repl import chunks, normalise_request

from .helpers.paths import TRANSCRIPTS

COMMAND_KEYS = {"cmd", "env", "allTactics", "rootGoals", "infotree"}


def pairs() -> list[Path]:
    return sorted(TRANSCRIPTS.glob("*.in"))


def classify(path: Path) -> str | None:
    """Why a transcript is not replayed through the driver (None: it is)."""
    out = path.with_name(path.name[:-3] + ".expected.out")
    if not out.exists():
        return "no recorded reply"
    try:
        requests = [normalise_request(b) for b in chunks(path.read_text())]
    except ValueError:
        return "a request is not JSON"
    if not all(isinstance(r, dict) and "cmd" in r and set(r) <= COMMAND_KEYS for r in requests):
        return "not command mode (file, tactic or pickle requests)"
    return None


def test_coverage_is_reported() -> None:
    all_pairs = pairs()
    assert len(all_pairs) >= 70
    excluded = {p.name: why for p in all_pairs if (why := classify(p))}
    covered = len(all_pairs) - len(excluded)
    print(f"\n{covered} of {len(all_pairs)} transcripts replayed through the driver; excluded:")
    for name, why in sorted(excluded.items()):
        print(f"  {name}: {why}")
    assert covered >= 25


@pytest.mark.parametrize("path", pairs(), ids=lambda p: p.stem)
def test_every_recorded_reply_parses_and_round_trips(path: Path) -> None:
    out = path.with_name(path.name[:-3] + ".expected.out")
    if not out.exists():
        pytest.skip("no recorded reply upstream")
    for block in chunks(out.read_text()):
        original = json.loads(block)
        reply = parse_reply(block)
        assert reply_to_json(reply) == original
        if reply.error is not None:
            assert verdict_of(reply) is Verdict.REPL_ERROR


def test_verdicts_of_recorded_replies() -> None:
    def first(name: str) -> Verdict:
        return verdict_of(parse_reply(next(chunks((TRANSCRIPTS / f"{name}.expected.out").read_text()))))

    assert first("dup_sorries") is Verdict.SORRY  # backtick quoting and a sorries entry
    assert first("invalid_line_break") is Verdict.INVALID
    assert first("unknown_environment") is Verdict.REPL_ERROR
    assert first("all_tactics") is Verdict.VALID


def test_shift_moves_every_position() -> None:
    reply = parse_reply(next(chunks((TRANSCRIPTS / "infotree.expected.out").read_text())))
    moved = reply_to_json(reply.shifted(5))
    assert moved["messages"][0]["pos"]["line"] == 6
    assert moved["infotree"][0]["node"]["stx"]["range"]["start"]["line"] == 6
    assert moved["infotree"][0]["node"]["stx"]["range"]["finish"]["line"] == 6
    tactics = reply_to_json(parse_reply(next(chunks((TRANSCRIPTS / "all_tactics.expected.out").read_text()))))
    assert tactics["tactics"][0]["pos"]["line"] == 1
    shifted = reply_to_json(parse_reply(json.dumps(tactics)).shifted(2))
    assert [t["pos"]["line"] for t in shifted["tactics"]] == [3, 3]


@pytest.mark.parametrize("path", [p for p in pairs() if classify(p) is None], ids=lambda p: p.stem)
async def test_replay_byte_for_byte_through_the_driver(path: Path) -> None:
    out_text = path.with_name(path.name[:-3] + ".expected.out").read_bytes()
    requests = [normalise_request(b) for b in chunks(path.read_text())]
    expected = out_text.split(b"\n\n")
    argv = tuple(fake_repl_command("--replay", str(TRANSCRIPTS)).split())
    repl = await Repl.start(ReplSpec(argv=argv), "replay")
    try:
        for k, request in enumerate(requests):
            if k >= len([e for e in expected if e.strip()]):
                break
            raw = await repl.request(json.dumps(request, ensure_ascii=False).encode() + b"\n\n")
            assert raw == expected[k].lstrip(b"\n")  # byte for byte, less the blank line that frames it
            reply = parse_reply(raw)
            assert reply_to_json(reply) == json.loads(expected[k])
    finally:
        await repl.kill()
