"""A session's tactic tree: the client's state ids, what built each state, and the whole proof a
path stands for. Pure: no REPL here (the room maps a node to the REPL's proof state of the day)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from kimina_grpc.repl import Message, Pos, Reply, Severity


class Status(Enum):
    """What a tactic came to (the contract's TacticStatus)."""

    INCOMPLETE = 1
    PROOF_COMPLETE = 2
    ERROR = 3
    TIMEOUT = 4


@dataclass(frozen=True, slots=True)
class TacticOutcome:
    """One tactic's answer: `state` is the new client id (0: none made)."""

    status: Status
    state: int = 0
    goals: tuple[str, ...] = ()
    messages: tuple[Message, ...] = ()
    error: str = ""
    seconds: float = 0.0
    sorries: tuple[tuple[int, str], ...] = ()
    """The states of the `sorry`s inside the tactic: (client id, goal)."""
    traces: tuple[str, ...] = ()
    repl_states: tuple[int, ...] = ()
    """The REPL's proof states the reply made (the room counts them toward the recycle budget)."""


@dataclass(slots=True)
class Node:
    """A state of the session. A root is a `sorry` of the opened code (`root` its index); any other
    node is `tactic` run on `parent`."""

    id: int
    parent: int | None
    tactic: str
    root: int
    goals: tuple[str, ...]
    repl_state: int
    """The REPL's proofState for it on the session's current REPL (changes when the session moves)."""
    sorry_of: int | None = None
    """A `sorry` inside the tactic that made `parent`: its index among that tactic's sorries (the
    REPL gives its state with the parent's, and a replay of the parent gives it again)."""


@dataclass(slots=True)
class SessionTree:
    roots: list[tuple[Pos, Pos | None, str]] = field(default_factory=list)
    """Each root's `sorry`: where it starts and ends in the user's code, and its goal."""
    nodes: dict[int, Node] = field(default_factory=dict)

    def add_root(self, start: Pos, end: Pos | None, goal: str, repl_state: int) -> Node:
        index = len(self.roots)
        self.roots.append((start, end, goal))
        return self._add(None, "", index, (goal,), repl_state)

    def add(self, parent: Node, tactic: str, goals: tuple[str, ...], repl_state: int) -> Node:
        return self._add(parent.id, tactic, parent.root, goals, repl_state)

    def add_sorry(self, parent: Node, index: int, goal: str, repl_state: int) -> Node:
        return self._add(parent.id, "", parent.root, (goal,), repl_state, sorry_of=index)

    def _add(
        self,
        parent: int | None,
        tactic: str,
        root: int,
        goals: tuple[str, ...],
        repl_state: int,
        *,
        sorry_of: int | None = None,
    ) -> Node:
        node = Node(len(self.nodes) + 1, parent, tactic, root, goals, repl_state, sorry_of)
        self.nodes[node.id] = node
        return node

    def path(self, state: int) -> list[Node]:
        """The nodes from the root to `state`, root first."""
        out: list[Node] = []
        node: Node | None = self.nodes[state]
        while node is not None:
            out.append(node)
            node = self.nodes[node.parent] if node.parent is not None else None
        return out[::-1]

    def unfinishable(self, state: int) -> str:
        """Why the path to `state` cannot be assembled into a whole proof ("" if it can)."""
        if any(n.sorry_of is not None for n in self.path(state)):
            return (
                f"state {state} lies under a `sorry` inside a tactic, whose text holds the `sorry`:"
                " finish the path through the tactic's own state"
            )
        return ""

    def in_order(self) -> list[Node]:
        """Every node after its parent (ids grow with creation): the order to replay them in."""
        return [self.nodes[k] for k in sorted(self.nodes)]


def assemble(code: str, start: Pos, end: Pos | None, tactics: list[str]) -> str:
    """`code` with the `sorry` from `start` to `end` replaced by `tactics`, one per line at the
    sorry's column (after `by` on the same line: on the lines below, indented two more than that
    line), continuation lines of a tactic at the same column, so that the tactics form the block
    the `sorry` stood in. No tactic: the code as it was."""
    if not tactics:
        return code
    lines = code.split("\n")
    row = lines[start.line - 1]
    stop = end.column if end is not None and end.line == start.line else start.column + len("sorry")
    before = row[: start.column]
    if before.rstrip().endswith("by"):  # `:= by sorry`: the block goes on the lines below, indented
        indent = " " * (len(row) - len(row.lstrip()) + 2)
        before = before.rstrip() + "\n" + indent
    else:
        indent = " " * start.column
    block = ("\n" + indent).join(t.replace("\n", "\n" + indent) for t in tactics)
    lines[start.line - 1] = before + block + row[stop:]
    return "\n".join(lines)


def reply_goals(obj: dict[str, Any]) -> tuple[str, ...]:
    goals = obj.get("goals", [])
    return tuple(g for g in goals if isinstance(g, str)) if isinstance(goals, list) else ()


def record(tree: SessionTree, node: Node, tactic: str, reply: Reply, seconds: float) -> TacticOutcome:
    """The REPL's `reply` to `tactic` run on `node`, its states added to `tree`: the new state, and
    one for each `sorry` inside the tactic (`have h : p := by sorry`), which a replay of the tactic
    gives again."""
    new_state = reply.extra.get("proofState")
    if reply.error is not None or not isinstance(new_state, int):
        return TacticOutcome(Status.ERROR, error=reply.error or "no proof state in the REPL's reply", seconds=seconds)
    goals = reply_goals(reply.extra)
    child = tree.add(node, tactic, goals, new_state)
    inner = [
        (tree.add_sorry(child, k, s.goal, s.proof_state).id, s.goal, s.proof_state)
        for k, s in enumerate(reply.sorries)
        if s.proof_state is not None
    ]
    traces = reply.extra.get("traces", [])
    errors = any(m.severity is Severity.ERROR for m in reply.messages)
    proof_status = str(reply.extra.get("proofStatus", ""))
    done = not goals and proof_status == "Completed"
    failed = errors or proof_status.startswith("Error")  # newer REPLs' kernel check of a finished proof
    return TacticOutcome(
        Status.ERROR if failed else Status.PROOF_COMPLETE if done else Status.INCOMPLETE,
        child.id,
        goals,
        reply.messages,
        seconds=seconds,
        sorries=tuple((state, goal) for state, goal, _ in inner),
        traces=tuple(t for t in traces if isinstance(t, str)) if isinstance(traces, list) else (),
        repl_states=(new_state, *(r for _, _, r in inner)),
    )
