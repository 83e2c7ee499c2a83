"""Results that always reach the caller: built without holding the event loop, and cut to fit gRPC's
send limit, so one proof's huge output is that proof's note, never its batch's or stream's failure.

gRPC refuses a whole message over LEAN_SERVER_MAX_MESSAGE_BYTES (RESOURCE_EXHAUSTED for the whole
call). A result over its share of the limit is cut, largest parts first: the info tree is dropped,
then the tactics, then messages and sorries are kept in order until their share is full (the first
error message is kept wherever it stands; the message that crosses the line keeps the start of its
text); an info message at the end counts what was left out, and `error` says what was cut and why.
The verdict stays the one decided from Lean's whole reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from kimina_grpc.repl import Reply
from kimina_grpc.repl.bounds import MARKER
from kimina_grpc.service import convert
from kimina_grpc.supervisor.jobs import Outcome
from kimina_grpc.v1 import verifier_pb2 as pb

SLICE = 1_000
"""Messages (sorries, tactics) converted per turn of the event loop."""
MARGIN = 64 << 10
"""Kept free of the send limit: the response's own fields and each result's framing."""
_ITEM_OVERHEAD = 8  # a repeated field's tag and length
_KEEP_TEXT = 4096  # bytes of text kept of the first error when it would not fit whole
_NOTE_ROOM = 2048  # what cutting adds: the note in `error`, the marker message


async def build(proof_id: str, outcome: Outcome, diagnostics: bool, max_bytes: int) -> pb.ProofResult:
    """The proof's result, at most `max_bytes` long. Never raises: a result that cannot be built is
    that proof's REPL_ERROR, saying why."""
    try:
        result = await _convert(proof_id, outcome, diagnostics)
        fit(result, max_bytes)
    except Exception as exc:  # an outcome the contract cannot carry: this proof's answer says so
        return pb.ProofResult(
            id=proof_id,
            verdict=pb.VERDICT_REPL_ERROR,
            error=f"the server could not represent this proof's result: {exc!r}"[:1000],
        )
    return result


async def _convert(proof_id: str, outcome: Outcome, diagnostics: bool) -> pb.ProofResult:
    reply = outcome.reply
    if reply is None or max(len(reply.messages), len(reply.sorries), len(reply.tactics)) <= SLICE:
        return convert.to_result(proof_id, outcome, diagnostics)
    head = replace(reply, messages=(), sorries=(), tactics=())
    result = convert.to_result(proof_id, replace(outcome, reply=head), diagnostics)
    for field in ("messages", "sorries", "tactics"):
        items: Sequence[Any] = getattr(reply, field)
        for start in range(0, len(items), SLICE):
            await asyncio.sleep(0)  # other calls, timers and health checks run between slices
            kw: dict[str, Any] = {field: tuple(items[start : start + SLICE])}
            part = Reply(**kw)
            result.MergeFrom(convert.to_result(proof_id, Outcome(outcome.verdict, part), False))
    return result


def fit(result: pb.ProofResult, max_bytes: int) -> None:
    """Cut `result` (in place) to at most `max_bytes` serialised bytes, saying so in `error`."""
    size = result.ByteSize()
    if size <= max_bytes:
        return
    target = max_bytes - _NOTE_ROOM  # the note in `error` and the marker message come on top
    notes = []
    if result.HasField("infotree"):
        before = result.ByteSize()
        result.ClearField("infotree")
        notes.append(f"the info tree ({before - result.ByteSize():,} bytes) dropped")
    if result.ByteSize() > target and len(result.tactics):
        notes.append(f"the {len(result.tactics):,} tactics dropped")
        del result.tactics[:]
    if result.ByteSize() > target:
        notes += _cut_lists(result, target)
    cut = f"this result was cut to fit {max_bytes:,} bytes (from {size:,}; LEAN_SERVER_MAX_MESSAGE_BYTES): "
    result.error = (result.error + "; " if result.error else "") + cut + ", ".join(notes)
    if result.ByteSize() > max_bytes:  # what is left (error, axioms, diagnostics) is the server's own
        del result.messages[:]
        del result.sorries[:]


def _cut_lists(result: pb.ProofResult, max_bytes: int) -> list[str]:
    """Messages and sorries share what the rest of the result leaves, in proportion to their sizes."""
    msg_sizes = [_framed(m.ByteSize()) for m in result.messages]
    sorry_sizes = [_framed(s.ByteSize()) for s in result.sorries]
    lists = sum(msg_sizes) + sum(sorry_sizes)
    room = max(0, max_bytes - (result.ByteSize() - lists))
    msg_room = room * sum(msg_sizes) // max(1, lists)
    all_messages = list(result.messages)
    first_error = next((i for i, m in enumerate(all_messages) if m.severity == pb.SEVERITY_ERROR), None)
    messages, msg_left, msg_bytes = _cut(all_messages, msg_sizes, msg_room, "text", first_error)
    sorries, sorry_left, sorry_bytes = _cut(list(result.sorries), sorry_sizes, room - msg_room, "goal", None)
    kept = {id(m) for m in messages}
    dropped_at = next((_copy(m.start) for m in all_messages if id(m) not in kept), None)
    messages, sorries = [_copy(m) for m in messages], [_copy(s) for s in sorries]
    del result.messages[:]
    result.messages.extend(messages)
    del result.sorries[:]
    result.sorries.extend(sorries)
    said = [f"{n:,} {what}" for n, what in ((msg_left, "messages"), (sorry_left, "sorries")) if n]
    if said:
        marker = result.messages.add(severity=pb.SEVERITY_INFO, text=f"{MARKER}{' and '.join(said)} not shown")
        if dropped_at is not None:
            marker.start.CopyFrom(dropped_at)
    notes = [f"{', '.join(said)} left out"] if said else []
    if msg_bytes + sorry_bytes:
        notes.append(f"{msg_bytes + sorry_bytes:,} bytes of text cut from the ones kept")
    return notes


def _framed(size: int) -> int:
    """Bytes an element of `size` takes in a repeated field: its tag, its length, itself."""
    return 1 + (max(1, size.bit_length()) + 6) // 7 + size


def _copy(message: Any) -> Any:
    """A detached copy (elements of a repeated field do not outlive its clearing)."""
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _cut(items: list[Any], sizes: list[int], room: int, text: str, witness: int | None) -> tuple[list[Any], int, int]:
    """The items that fit in `room` bytes, in order: whole ones, then the start of the one crossing
    the line; the `witness` item is kept wherever it stands (its text cut to a few KiB if need be).
    Returns the kept items, how many were left out, and how many bytes of text were cut."""
    reserve = min(sizes[witness], _KEEP_TEXT + 256) if witness is not None else 0
    room -= reserve
    kept: list[Any] = []
    cut_bytes = used = 0
    for i, (item, size) in enumerate(zip(items, sizes, strict=True)):
        if i == witness:
            continue
        if used + size <= room:
            kept.append((i, item))
            used += size
            continue
        rest = room - used - (size - len(getattr(item, text).encode()))
        if rest > 256:  # the start of its text is worth keeping
            cut_bytes += _shorten(item, text, rest)
            kept.append((i, item))
        break
    if witness is not None:
        if sizes[witness] > reserve:
            cut_bytes += _shorten(items[witness], text, _KEEP_TEXT)
        kept.append((witness, items[witness]))
    kept.sort(key=lambda pair: pair[0])
    return [item for _, item in kept], len(items) - len(kept), cut_bytes


def _shorten(item: Any, text: str, keep: int) -> int:
    """Cut the item's text to about `keep` bytes (on a character boundary), saying how much went."""
    raw = getattr(item, text).encode()
    if len(raw) <= keep:
        return 0
    head = raw[: max(0, keep - 64)].decode(errors="ignore")
    gone = len(raw) - len(head.encode())
    setattr(item, text, f"{head} …[{MARKER}{gone:,} more bytes not shown]")
    return gone


def fit_all(results: Sequence[pb.ProofResult], max_bytes: int) -> None:
    """Cut a batch's results so that together they fit `max_bytes`: small ones stay whole, the
    largest share what is left equally (each at most its share)."""
    sizes = [_framed(r.ByteSize()) for r in results]
    if sum(sizes) <= max_bytes:
        return
    cap = share(sizes, max_bytes)
    for result, size in zip(results, sizes, strict=True):
        if size > cap:
            fit(result, max(0, cap - _ITEM_OVERHEAD))


def share(sizes: Sequence[int], total: int) -> int:
    """The largest cap such that the sizes, each cut to the cap, sum to at most `total`."""
    left, count = total, len(sizes)
    for size in sorted(sizes):
        if size * count > left:
            return left // count
        left -= size
        count -= 1
    return max(sizes, default=total)
