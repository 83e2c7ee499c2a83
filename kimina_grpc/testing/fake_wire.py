"""The stand-in REPL's wire format (leanprover-community/repl, REPL/Main.lean): how a request is
read (`getLines`), which request form it is (the `FromJson` instances), how a reply is written, and
how a recorded transcript splits into its requests and replies."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

_LEAN_SPACE = " \t\r\n"  # Lean's `Char.isWhitespace`, what `String.trim` removes


def read_request(stdin: BinaryIO, *, trim: bool = False) -> str | None:
    """One request as the REPL reads it (`getLines`): lines up to and including the first blank
    one (blank as Lean's `trim` sees it), joined as they are (REPL up to v4.21: a raw newline
    inside a JSON string stays, and the JSON is then refused) or, with `trim` (v4.22 on), each
    right-trimmed and joined with no newline (the raw newline disappears). A blank line where a
    request should start is a request of its own (`"\\n"`, which is not JSON). None at EOF with
    nothing read."""
    parts: list[str] = []
    while True:
        line = stdin.readline()
        if not line:
            return "".join(parts) if parts else None
        text = line.decode("utf-8", errors="replace")
        if not text.strip(_LEAN_SPACE):
            return "".join(parts) + text
        parts.append(text.rstrip(_LEAN_SPACE) if trim else text)


def write_reply(stdout: BinaryIO, obj: dict[str, Any]) -> None:
    tree = obj.pop("infotree", None)
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    if tree is not None:
        # Written apart: a deep tree is built as text (json.dumps would recurse past Python's bound).
        text = text[:-2] + ',\n "infotree": ' + (tree if isinstance(tree, str) else json.dumps(tree)) + "\n}"
    stdout.write(text.encode() + b"\n\n")
    stdout.flush()


def chunks(text: str) -> Iterator[str]:
    """Split a transcript into its blank-line separated blocks (without the separators)."""
    block: list[str] = []
    for line in text.split("\n"):
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block) + "\n"
            block = []
    if block:
        yield "\n".join(block) + "\n"


def normalise_request(block: str) -> Any:
    """A request as the REPL understands it: right-trimmed lines joined, then parsed."""
    return json.loads("".join(line.rstrip() for line in block.split("\n")))


def _nat(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bool(value: Any) -> bool:
    return isinstance(value, bool)


_OPTIONAL: dict[str, Callable[[Any], bool]] = {"env": _nat, "allTactics": _bool, "rootGoals": _bool}


def request_form(req: Any) -> str | None:
    """Which request form `req` is (as the REPL's `FromJson` instances read it), or None when it
    matches none (a field of the wrong type: `env` must be a natural number, flags booleans)."""
    if not isinstance(req, dict):
        return None
    if isinstance(req.get("pickleTo"), str) and _nat(req.get("env")):
        return "pickleTo"
    if isinstance(req.get("unpickleEnvFrom"), str):
        return "unpickleEnvFrom"
    if isinstance(req.get("tactic"), str) and _nat(req.get("proofState")):  # `FromJson ProofStep`
        return "tactic"
    if isinstance(req.get("cmd"), str):
        fine = all(check(req[k]) for k, check in _OPTIONAL.items() if req.get(k) is not None)
        return "cmd" if fine and isinstance(req.get("infotree", ""), str | type(None)) else None
    return None
