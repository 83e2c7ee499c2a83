"""The Lean code in a completion, as prover models write it (the rules are in the package's doc):
the reasoning dropped, the last ```lean4 block or the statement plus its continuation, the header put
in front, and the textual guard that the formal statement is there unchanged. Pure text work."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

Extract = Literal["auto", "last_block", "statement"]

# An info string may follow the language (```lean4 title="x"); the fence line ends the match.
_FENCE = r"```[ \t]*lean4?(?![\w-])[^\n`]*\n"
_BLOCK = re.compile(_FENCE + r"(.*?)```", re.S | re.I)
_OPEN_BLOCK = re.compile(_FENCE, re.I)
_IMPORT = re.compile(r"^\s*import\s", re.M)
_SPACE = re.compile(r"\s+")
_BLOCK_COMMENT = re.compile(r"/-(?:(?!/-|-/).)*-/", re.S)  # innermost first: Lean's comments nest
_LINE_COMMENT = re.compile(r"--[^\n]*")
_DECLARATION = re.compile(r"\b(?:theorem|lemma)\b")


class Unparsable(ValueError):
    """A completion holds no Lean code to check; the message says why."""


def completion_text(completion: Any) -> str:
    """A completion as text: a string, or TRL's conversational form (a list of messages, the last
    assistant message's content counts; content may be a string or a list of text parts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, Sequence) and completion and all(isinstance(m, Mapping) for m in completion):
        said = [m for m in completion if m.get("role", "assistant") == "assistant"]
        content = (said or list(completion))[-1].get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, Sequence):
            parts = [p.get("text", "") if isinstance(p, Mapping) else p for p in content]
            if all(isinstance(p, str) for p in parts):
                return "".join(parts)
    raise Unparsable(f"completion is neither text nor chat messages ({type(completion).__name__})")


def _plain(code: str) -> str:
    """Code without comments and doc comments, `lemma` read as `theorem`, whitespace collapsed:
    what the textual statement guard compares."""
    while True:
        stripped = _BLOCK_COMMENT.sub(" ", code)
        if stripped == code:
            break
        code = stripped
    code = _LINE_COMMENT.sub(" ", code)
    return _SPACE.sub(" ", _DECLARATION.sub("theorem", code)).strip()


def _statement_head(statement: str) -> str:
    """The statement's declaration, from its `theorem`/`lemma` to its `:=` (imports, `open` lines,
    comments and the proof, `:= by sorry`, left out), as `_plain` writes it."""
    plain = _plain(statement)
    found = _DECLARATION.search(plain)
    head = plain[found.start() :] if found else plain
    return head.rsplit(":=", 1)[0].strip() if ":=" in head else head


def _answer(text: str) -> str:
    """The completion without its reasoning: up to the last `</think>` (the opening tag may be in the
    prompt, as chat templates put it), and from an unclosed `<think>` to the end."""
    return text.rpartition("</think>")[2].split("<think>", 1)[0]


def _last_block(text: str) -> str | None:
    """The last closed ```lean block; None when there is none. Raises Unparsable when the answer ends
    in an unclosed fence: it was cut off, and an earlier block is only a draft."""
    blocks = list(_BLOCK.finditer(text))
    if _OPEN_BLOCK.search(text, blocks[-1].end() if blocks else 0):
        raise Unparsable("the ```lean4 block is not closed (a truncated completion?)")
    return str(blocks[-1].group(1)) if blocks else None


def extract_lean(
    completion: Any,
    *,
    extract: Extract = "last_block",
    formal_statement: str | None = None,
    header: str | None = None,
    theorem_name: str | None = None,
    require_statement: bool = True,
) -> str:
    """The Lean code to check for one completion; raises Unparsable with the reason."""
    full = completion_text(completion)
    text = _answer(full)
    block = _last_block(text) if extract != "statement" else None
    if block is not None:
        code = block
    elif extract == "last_block":
        where = "after the reasoning (<think>)" if "think>" in full else "in the completion"
        raise Unparsable(f"no ```lean4 or ```lean block {where}")
    elif formal_statement:
        statement = re.sub(r"\bsorry\s*$", "", formal_statement.rstrip())
        code = statement + text.split("```", 1)[0]
    elif extract == "statement":
        raise Unparsable("extract='statement' needs the formal statement (dataset column)")
    else:
        raise Unparsable("no ```lean4 block and no formal statement to complete")
    if not code.strip():
        raise Unparsable("the Lean code is empty")
    if header and not _IMPORT.search(code):
        code = header.rstrip("\n") + "\n\n" + code
    if formal_statement and require_statement:
        head = _statement_head(formal_statement)
        if head and head not in _plain(code):
            raise Unparsable("the code does not contain the formal statement unchanged")
    if theorem_name and not re.search(rf"\b(theorem|lemma)\s+{re.escape(theorem_name)}(?![\w.'])", code):
        raise Unparsable(f"no theorem named {theorem_name}")
    return code
