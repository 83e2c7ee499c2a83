"""Position shifting on Kimina's recordings of real Goedel proofs.

The recorded message positions are relative to the body Kimina sent. Shifted by the header offset our
split computes, each must land on the text the message is about. "Right" is checked by what the
message names: `unused variable `h`` must point at `h`, "`X` has been deprecated" at `X`,
"'tac' tactic does nothing" at `tac`; every other message at a non-blank token of code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kimina_grpc.repl import Verdict, split_header, verdict_of
from kimina_grpc.repl.protocol import reply_from_json

from .helpers.paths import KIMINA_MATCH

_NAMED = [
    re.compile(r"^unused variable `([^`]+)`"),
    re.compile(r"^`([^`]+)` has been deprecated"),
    re.compile(r"^'([^']+)' tactic does nothing"),
]


def outputs() -> list[Path]:
    return sorted((KIMINA_MATCH / "output").glob("*.json"))


@pytest.mark.parametrize("path", outputs(), ids=lambda p: p.stem)
def test_shifted_positions_land_on_what_the_message_names(path: Path) -> None:
    code = (KIMINA_MATCH / "input" / f"{path.stem}.lean").read_text()
    lines = code.split("\n")
    record = json.loads(path.read_text())["results"][0]
    if record["response"] is None:
        assert record["error"] == "Lean process timed out"
        return
    body_reply = reply_from_json({k: v for k, v in record["response"].items() if k != "time"})
    split = split_header(code)
    assert split.header.startswith("import ")
    reply = body_reply.shifted(split.line_offset)
    for m in reply.messages:
        line = lines[m.pos.line - 1]
        same_line = m.end_pos is not None and m.end_pos.line == m.pos.line
        text = line[m.pos.column : m.end_pos.column] if same_line and m.end_pos else line[m.pos.column :]
        assert text.strip() and not text.startswith((" ", "--")), (m, text)
        for pattern in _NAMED:
            named = pattern.match(m.data)
            if named:
                assert text == named.group(1), (m.data, text)
    # The verdict rule on real replies: these recordings have no errors or sorries unless Lean said so.
    has_error = any(m.severity.value == "error" for m in reply.messages)
    assert (verdict_of(reply) is Verdict.INVALID) == has_error


def test_every_recording_is_covered() -> None:
    assert len(outputs()) >= 50
