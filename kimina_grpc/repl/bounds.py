"""What a parsed reply may hold, decided apart from the parsing: positions and text the contract can
carry, and at most so many messages, sorries and tactics (each one costs the server's event loop
time to unpickle and to convert, about 8 µs a message: 300,000 of them stalled every caller for 4 s).

Cutting a list never changes the verdict (`verdict_of`): the first error message and the first
`sorry` warning are kept whatever their place, and a cut list says so with an info message naming
the count left out (`MARKER`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from kimina_grpc.repl.protocol import Message, Pos, Reply, ReplyInvalid, Severity, Tactic, parse_reply
from kimina_grpc.repl.reply_verdict import SORRY_WARNINGS

MAX_POSITION = (1 << 31) - 1
"""Lines and columns travel as int32 (the contract's Position); no file within the code bound has more."""
MAX_ITEMS = 10_000
"""Messages (and sorries, and tactics) per reply, unless the server's settings say otherwise."""
MARKER = "kimina-grpc: "
"""How the server's own notes among Lean's messages begin."""

T = TypeVar("T")


def parse(raw: bytes | str, shift: int = 0, max_items: int = MAX_ITEMS) -> Reply:
    """`protocol.parse_reply`, then checked (ReplyInvalid) and bounded: what the server hands on."""
    reply = parse_reply(raw, shift)
    check(reply)
    return bound(reply, max_items)


def check(reply: Reply) -> None:
    """Raise ReplyInvalid when a field of the reply cannot be carried: a position outside
    [0, 2**31 - 1], or text that is not valid Unicode (a lone surrogate from a `\\ud800` escape)."""
    for m in reply.messages:
        _pos(m.pos, "message")
        _opt(m.end_pos, "message end")
        _text(m.data, "message")
    for s in reply.sorries:
        _opt(s.pos, "sorry")
        _opt(s.end_pos, "sorry end")
        _text(s.goal, "sorry goal")
        _int(s.proof_state, "sorry proofState")
    for t in reply.tactics:
        _pos(t.pos, "tactic")
        _opt(t.end_pos, "tactic end")
        _text(t.tactic, "tactic")
        _text(t.goals, "tactic goals")
        _int(t.proof_state, "tactic proofState")
        for name in t.used_constants or ():
            if not isinstance(name, str):
                raise ReplyInvalid(f"a tactic's usedConstants holds {type(name).__name__}, not a name")
            _text(name, "tactic usedConstants")
    if reply.infotree is not None:
        _text(reply.infotree, "info tree")
    if reply.error is not None:
        _text(reply.error, "message")


def _pos(p: Pos, what: str) -> None:
    for name, value in (("line", p.line), ("column", p.column)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_POSITION:
            raise ReplyInvalid(f"a {what} position's {name} is {value!r:.40}, outside [0, {MAX_POSITION}]")


def _opt(p: Pos | None, what: str) -> None:
    if p is not None:
        _pos(p, what)


def _int(value: object, what: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ReplyInvalid(f"{what} is {value!r:.40}, not an integer")


def _text(value: str, what: str) -> None:
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise ReplyInvalid(f"the {what} text is not valid Unicode ({exc.reason} at {exc.start})") from None


def bound(reply: Reply, max_items: int = MAX_ITEMS) -> Reply:
    """The reply with at most `max_items` messages, sorries and tactics each (the verdict unchanged);
    an info message at the end says how many of each were left out."""
    max_items = max(2, max_items)  # room for the two witnesses
    if max(len(reply.messages), len(reply.sorries), len(reply.tactics)) <= max_items:
        return reply
    messages = keep(reply.messages, max_items, (_is_error, _is_sorry_warning))
    sorries = keep(reply.sorries, max_items, ())
    tactics: tuple[Tactic, ...] = keep(reply.tactics, max_items, ())
    left = [
        (len(reply.messages) - len(messages), "messages"),
        (len(reply.sorries) - len(sorries), "sorries"),
        (len(reply.tactics) - len(tactics), "tactics"),
    ]
    said = ", ".join(f"{n:,} {what}" for n, what in left if n)
    at = _first_dropped(reply.messages, messages) or Pos(1, 0)
    note = Message(
        Severity.INFO,
        at,
        None,
        f"{MARKER}{said} of this reply not shown (at most {max_items:,} of each are kept; "
        "LEAN_SERVER_MAX_REPLY_MESSAGES)",
    )
    return replace(reply, messages=(*messages, note), sorries=sorries, tactics=tactics)


def keep(items: Sequence[T], limit: int, witnesses: Sequence[Callable[[T], bool]]) -> tuple[T, ...]:
    """The first `limit` items, in order, except that the first item matching each witness
    predicate is kept wherever it stands (in the place of the last ones before it)."""
    if len(items) <= limit:
        return tuple(items)
    chosen: set[int] = set()
    for matches in witnesses:
        first = next((i for i, item in enumerate(items) if matches(item)), None)
        if first is not None:
            chosen.add(first)
    for i in range(len(items)):
        if len(chosen) >= limit:
            break
        chosen.add(i)
    return tuple(items[i] for i in sorted(chosen))


def _is_error(m: Message) -> bool:
    return m.severity is Severity.ERROR


def _is_sorry_warning(m: Message) -> bool:
    return m.severity is Severity.WARNING and m.data.startswith(SORRY_WARNINGS)


def _first_dropped(full: Sequence[Message], kept: Sequence[Message]) -> Pos | None:
    ids = {id(m) for m in kept}
    return next((m.pos for m in full if id(m) not in ids), None)
