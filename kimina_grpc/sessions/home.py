"""A session's home: the REPL it is pinned to, and what is said to it (the header imported, the
session's code opened, a tactic sent, a session's tree replayed on a fresh REPL). The caller holds
the home's lock; which REPL a session lives on, and what happens when one dies, is the room's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from kimina_grpc.repl import (
    Message,
    Repl,
    ReplCrashed,
    ReplSpec,
    Reply,
    ReplyTooDeep,
    Severity,
    Split,
    Verdict,
    protocol,
    verdict_of,
)
from kimina_grpc.repl.protocol import ProtocolError, parse_reply
from kimina_grpc.sessions.tree import SessionTree
from kimina_grpc.supervisor.jobs import CheckOptions

UNREADABLE = (ProtocolError, ReplyTooDeep)
"""A reply that cannot be read."""
BROKEN = (TimeoutError, ReplCrashed, *UNREADABLE)
"""What leaves a REPL unusable: a reply not read in time, a dead process, a reply that cannot be read."""


class OpenFailed(Exception):
    """The opened code gives no state to start from (Lean's error, no sorry, a failed header)."""


@dataclass(eq=False)
class SessionRepl:
    header: str
    id: str
    repl: Repl | None = None
    base_env: int = 0
    sessions: set[Session] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    states: int = 0
    dead: bool = False
    rss_floor: int = 0
    """Its resident memory once its sessions were on it (after the import, or a move's replay)."""


@dataclass(eq=False)
class Session:
    id: str
    split: Split
    code: str
    options: CheckOptions
    tree: SessionTree = field(default_factory=SessionTree)
    home: SessionRepl | None = None
    moved: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while the session's REPL is usable; cleared while it moves to another."""
    broken: str = ""
    messages: tuple[Message, ...] = ()


async def import_header(home: SessionRepl, spec: ReplSpec, timeout: float) -> Repl:
    """Start `home`'s REPL and import its header (its environment becomes `base_env`)."""
    repl = home.repl = await Repl.start(spec, home.id)
    reply, _ = await asyncio.wait_for(repl.run(protocol.command(home.header), measure=False), timeout)
    if verdict_of(reply) is not Verdict.VALID or reply.env is None:
        raise OpenFailed(f"the header failed: {reply.error or [m.data for m in reply.messages][:1]}")
    home.base_env = reply.env
    # Its tree is complete: from now on each reply must be the REPL's own (repl/ownership.py), as a
    # pool REPL's. Its sessions are several users': what one's code leaves running must not stay.
    await repl.settle()
    return repl


async def send_tactic(repl: Repl, proof_state: int, tactic: str, timeout: float) -> Reply:
    """`tactic` run on the REPL's `proof_state`; TimeoutError past `timeout`."""
    data = json.dumps({"tactic": tactic, "proofState": proof_state}, ensure_ascii=False).encode() + b"\n\n"
    return parse_reply(await asyncio.wait_for(repl.request(data), timeout))


async def open_on(home: SessionRepl, session: Session) -> None:
    """Send the session's code on `home` and map its sorries to the tree's roots, recording them
    the first time, re-pointing them after a move."""
    assert home.repl is not None
    split = session.split
    reply, _ = await asyncio.wait_for(
        home.repl.run(protocol.command(split.body, env=home.base_env), measure=False, shift=split.line_offset),
        session.options.timeout,
    )
    errors = [m for m in reply.messages if m.severity is Severity.ERROR]
    if reply.error is not None or errors:
        raise OpenFailed(reply.error or f"line {errors[0].pos.line}: {errors[0].data}")
    sorries = [s for s in reply.sorries if s.proof_state is not None and s.pos is not None]
    if not sorries:
        raise OpenFailed("the code has no `sorry` to start from")
    tree = session.tree
    session.messages = reply.messages
    if not tree.roots:
        for s in sorries:
            assert s.pos is not None and s.proof_state is not None
            tree.add_root(s.pos, s.end_pos, s.goal, s.proof_state)
    else:
        roots = [n for n in tree.in_order() if n.parent is None]
        if len(roots) != len(sorries):
            raise OpenFailed("the code gave other states on the fresh REPL")
        for n, s in zip(roots, sorries, strict=True):
            assert s.proof_state is not None
            n.repl_state = s.proof_state
    home.states = max([home.states, *(s.proof_state + 1 for s in sorries if s.proof_state is not None)])


async def replay(home: SessionRepl, session: Session, restored: Callable[[], None]) -> None:
    """Open the session on `home` and run its tree's tactics again, each node re-pointed to its new
    REPL state (`restored()` after each)."""
    await open_on(home, session)
    assert home.repl is not None
    inner: dict[int, list[int | None]] = {}  # a replayed node -> the states of its tactic's sorries
    for node in session.tree.in_order():
        if node.parent is None:
            continue
        parent = session.tree.nodes[node.parent]
        if node.sorry_of is not None:  # its state came with its parent's
            states = inner.get(parent.id, [])
            state: object = states[node.sorry_of] if node.sorry_of < len(states) else None
        else:
            reply = await send_tactic(home.repl, parent.repl_state, node.tactic, session.options.timeout)
            state = reply.extra.get("proofState")
            inner[node.id] = [s.proof_state for s in reply.sorries]
        if not isinstance(state, int):
            raise OpenFailed(f"state {node.id} did not come back")
        node.repl_state = state
        home.states = max(home.states, state + 1)
        restored()
