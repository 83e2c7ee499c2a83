"""The Lean REPL's wire format (leanprover-community/repl, command mode) as typed values.

Requests are one line of JSON followed by a blank line; replies are pretty-printed JSON objects
followed by a blank line. Positions in a reply are relative to the command sent: lines 1-based,
columns 0-based (code points).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

InfotreeMode = Literal["full", "tactics", "original", "substantive"]


class ProtocolError(Exception):
    """The REPL wrote something that is not a reply: the process cannot be trusted any more."""


class ReplyRefused(Exception):
    """A well-formed reply that cannot be handed on: the REPL is still in step (it recorded the
    command's environment), but this proof gets no reply of Lean's."""


class ReplyTooDeep(ReplyRefused):
    """A well-formed reply nests deeper than the parser's bound (info trees of huge proofs)."""


class ReplyInvalid(ReplyRefused):
    """A reply with a field the contract cannot carry (a position past int32, text that is not
    Unicode): no honest REPL writes one, so its REPL is recycled too (see `bounds.check`)."""


class ReplyTooSlow(ReplyRefused):
    """The reply could not be read within what was left of the proof's timeout."""


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Pos:
    line: int
    column: int

    def shifted(self, lines: int) -> Pos:
        return Pos(self.line + lines, self.column)


@dataclass(frozen=True, slots=True)
class Message:
    severity: Severity
    pos: Pos
    end_pos: Pos | None
    data: str


@dataclass(frozen=True, slots=True)
class Sorry:
    pos: Pos | None
    end_pos: Pos | None
    goal: str
    proof_state: int | None


@dataclass(frozen=True, slots=True)
class Tactic:
    pos: Pos
    end_pos: Pos | None
    tactic: str
    goals: str
    proof_state: int | None
    used_constants: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Reply:
    """A REPL reply. `error` is set for REPL-level failures (`{"message": "Unknown environment."}`);
    `extra` keeps fields of reply forms the service never asks for (tactic mode, pickling) so that
    every reply the REPL can write parses and round-trips. `infotree` is kept as JSON text: it is
    only ever handed on, and info trees can be tens of MiB (see `decode`)."""

    env: int | None = None
    messages: tuple[Message, ...] = ()
    sorries: tuple[Sorry, ...] = ()
    tactics: tuple[Tactic, ...] = ()
    infotree: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def shifted(self, lines: int) -> Reply:
        """The same reply with every position moved down by `lines` (into the user's file)."""
        if lines == 0:
            return self
        return replace(
            self,
            messages=tuple(
                replace(m, pos=m.pos.shifted(lines), end_pos=m.end_pos and m.end_pos.shifted(lines))
                for m in self.messages
            ),
            sorries=tuple(
                replace(s, pos=s.pos and s.pos.shifted(lines), end_pos=s.end_pos and s.end_pos.shifted(lines))
                for s in self.sorries
            ),
            tactics=tuple(
                replace(t, pos=t.pos.shifted(lines), end_pos=t.end_pos and t.end_pos.shifted(lines))
                for t in self.tactics
            ),
            infotree=None if self.infotree is None else _dump(shift_tree(json.loads(self.infotree), lines)),
        )


def shift_tree(tree: Any, lines: int) -> Any:
    """Shift every `{"line", "column"}` position in a parsed info tree (stx ranges, goal positions),
    in place, without recursion (trees nest thousands of levels deep); returns the tree."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            line = node.get("line")
            if isinstance(line, int) and not isinstance(line, bool) and isinstance(node.get("column"), int):
                node["line"] = line + lines
            else:
                stack.extend(node.values())
    return tree


def _dump(tree: Any) -> str:
    try:
        return json.dumps(tree, ensure_ascii=False)
    except RecursionError:
        raise ReplyTooDeep("the info tree nests too deeply to be serialised") from None


def command(
    cmd: str,
    *,
    env: int | None = None,
    all_tactics: bool = False,
    infotree: InfotreeMode | None = None,
) -> bytes:
    """Encode a command-mode request: one line of JSON and a blank line.

    json.dumps escapes newlines (the REPL deletes raw ones) and the line starts with `{` (the REPL
    answers nothing to a request starting with `#` or `--`), so every request gets a reply.
    """
    req: dict[str, Any] = {"cmd": cmd}
    if env is not None:
        req["env"] = env
    if all_tactics:
        req["allTactics"] = True
    if infotree is not None:
        req["infotree"] = infotree
    return json.dumps(req, ensure_ascii=False).encode() + b"\n\n"


BARRIER = command("", env=1 << 32)
"""Sent right behind every command: the REPL answers it with `{"message": "Unknown environment."}`
and records nothing. A command's reply must be followed by exactly that: a reply written by anyone
else (a process the proof started, writing to the stdout it inherited) arrives before the REPL's
own, which then stands where the barrier's answer should be, and the forgery is seen."""
BARRIER_REPLY = {"message": "Unknown environment."}


def pickle_to(path: str, env: int) -> bytes:
    """Encode `{"pickleTo": path, "env": env}`: the REPL writes environment `env` (its imports, the
    constants added since them, and the command scopes) to `path` and answers `{"env": env}`,
    recording no new environment."""
    return json.dumps({"pickleTo": path, "env": env}, ensure_ascii=False).encode() + b"\n\n"


def unpickle_env_from(path: str) -> bytes:
    """Encode `{"unpickleEnvFrom": path}`: the REPL imports the pickle's imports, adds its constants
    back (re-checked by the kernel up to REPL v4.29, not from v4.30), and records the result as its
    next environment. An unreadable pickle or a constant the kernel rejects is an uncaught exception:
    the process exits."""
    return json.dumps({"unpickleEnvFrom": path}, ensure_ascii=False).encode() + b"\n\n"


def _pos(obj: Any) -> Pos:
    if not isinstance(obj, dict) or not isinstance(obj.get("line"), int) or not isinstance(obj.get("column"), int):
        raise ProtocolError(f"not a position: {obj!r:.200}")
    return Pos(obj["line"], obj["column"])


def _opt_pos(obj: Any) -> Pos | None:
    return None if obj is None else _pos(obj)


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise ProtocolError(f"{key} is not a string: {value!r:.200}")
    return value


def _message(obj: Any) -> Message:
    if not isinstance(obj, dict):
        raise ProtocolError(f"not a message: {obj!r:.200}")
    try:
        severity = Severity(str(obj.get("severity")))
    except ValueError:
        raise ProtocolError(f"unknown severity: {obj.get('severity')!r:.50}") from None
    return Message(severity, _pos(obj.get("pos")), _opt_pos(obj.get("endPos")), _str(obj, "data"))


def _sorry(obj: Any) -> Sorry:
    if not isinstance(obj, dict):
        raise ProtocolError(f"not a sorry: {obj!r:.200}")
    return Sorry(_opt_pos(obj.get("pos")), _opt_pos(obj.get("endPos")), _str(obj, "goal"), obj.get("proofState"))


def _tactic(obj: Any) -> Tactic:
    if not isinstance(obj, dict):
        raise ProtocolError(f"not a tactic: {obj!r:.200}")
    used = obj.get("usedConstants")
    if used is not None and not isinstance(used, list):
        raise ProtocolError(f"usedConstants is not a list: {used!r:.200}")
    return Tactic(
        _pos(obj.get("pos")),
        _opt_pos(obj.get("endPos")),
        _str(obj, "tactic"),
        _str(obj, "goals"),
        obj.get("proofState"),
        None if used is None else tuple(used),
    )


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise ProtocolError(f"{key} is not a list")
    return value


_KNOWN = frozenset({"env", "messages", "sorries", "tactics", "infotree", "message"})
GOALS_ACCOMPLISHED = "Goals accomplished!"
"""Lean 4.19 (only) logs this info over every finished proof (REPL v4.19.0's expected outputs; from
4.20 it is a silent message the REPL does not print). It says nothing a verdict does not, and would
make the same proof's messages differ between Lean versions: dropped from every reply."""


def _shown(m: Message) -> bool:
    return not (m.severity is Severity.INFO and m.data == GOALS_ACCOMPLISHED)


def parse_reply(raw: bytes | str, shift: int = 0) -> Reply:
    """Parse one reply (the text between blank lines), every position moved down by `shift` lines.
    Raises ProtocolError if it is not a reply, ReplyTooDeep if it nests deeper than the parser goes."""
    try:
        obj = json.loads(raw)
    except RecursionError:
        raise ReplyTooDeep("the reply nests deeper than the parser's recursion bound") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"reply is not JSON: {exc}") from None
    tree = obj.pop("infotree", None) if isinstance(obj, dict) else None
    reply = reply_from_json(obj).shifted(shift)
    if tree is None:
        return reply
    return replace(reply, infotree=_dump(shift_tree(tree, shift) if shift else tree))


def reply_from_json(obj: Any) -> Reply:
    if not isinstance(obj, dict):
        raise ProtocolError(f"reply is not a JSON object: {obj!r:.200}")
    env = obj.get("env")
    if env is not None and (not isinstance(env, int) or isinstance(env, bool)):
        raise ProtocolError(f"env is not an integer: {env!r:.50}")
    error = obj.get("message")
    if error is not None and not isinstance(error, str):
        raise ProtocolError("message is not a string")
    return Reply(
        env=env,
        messages=tuple(filter(_shown, (_message(m) for m in _list(obj, "messages")))),
        sorries=tuple(_sorry(s) for s in _list(obj, "sorries")),
        tactics=tuple(_tactic(t) for t in _list(obj, "tactics")),
        infotree=None if obj.get("infotree") is None else _dump(obj["infotree"]),
        error=error,
        extra={k: v for k, v in obj.items() if k not in _KNOWN},
    )


def _pos_json(p: Pos) -> dict[str, int]:
    return {"line": p.line, "column": p.column}


def reply_to_json(reply: Reply) -> dict[str, Any]:
    """The REPL's JSON for a reply (fields the REPL omits when empty are omitted)."""
    out: dict[str, Any] = dict(reply.extra)
    if reply.error is not None:
        out["message"] = reply.error
    if reply.env is not None:
        out["env"] = reply.env
    if reply.messages:
        out["messages"] = [
            {
                "severity": m.severity.value,
                "pos": _pos_json(m.pos),
                "endPos": m.end_pos and _pos_json(m.end_pos),
                "data": m.data,
            }
            for m in reply.messages
        ]
    if reply.sorries:
        sorries = []
        for s in reply.sorries:
            item: dict[str, Any] = {"goal": s.goal}
            if s.proof_state is not None:
                item["proofState"] = s.proof_state
            if s.pos is not None:
                item["pos"] = _pos_json(s.pos)
            if s.end_pos is not None:
                item["endPos"] = _pos_json(s.end_pos)
            sorries.append(item)
        out["sorries"] = sorries
    if reply.tactics:
        tactics = []
        for t in reply.tactics:
            item = {"tactic": t.tactic, "goals": t.goals, "pos": _pos_json(t.pos)}
            if t.end_pos is not None:
                item["endPos"] = _pos_json(t.end_pos)
            if t.proof_state is not None:
                item["proofState"] = t.proof_state
            if t.used_constants is not None:
                item["usedConstants"] = list(t.used_constants)
            tactics.append(item)
        out["tactics"] = tactics
    if reply.infotree is not None:
        out["infotree"] = json.loads(reply.infotree)
    return out
