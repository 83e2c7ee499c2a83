"""What the stand-in's Lean writes into a reply, in the REPL's JSON shapes: a message, a sorry entry,
Lean 4.19's "Goals accomplished!" over each finished proof, and info trees (deep or large ones, for
the directives that test the server's bounds)."""

from __future__ import annotations

import json
from typing import Any

from kimina_grpc.testing.fake_env import Env


def msg(severity: str, line: int, column: int, data: str) -> dict[str, Any]:
    return {
        "severity": severity,
        "pos": {"line": line, "column": column},
        "endPos": {"line": line, "column": column + 1},
        "data": data,
    }


def sorry_at(line: int, column: int, proof_state: int, goal: str) -> dict[str, Any]:
    return {
        "proofState": proof_state,
        "pos": {"line": line, "column": column},
        "goal": goal,
        "endPos": {"line": line, "column": column + 5},
    }


def goals_accomplished(
    proofs: list[tuple[int, int, str | None]],
    lines: list[str],
    first: int,
    *,
    messages: list[dict[str, Any]],
    sorries: list[dict[str, Any]],
    env: Env,
) -> list[dict[str, Any]]:
    """Lean 4.19's info "Goals accomplished!" over each theorem or example that was elaborated without
    an error or a sorry (REPL v4.19.0's expected outputs): from its keyword to the end of its text
    (up to the next line that starts a command at column 0)."""
    out = []
    for index, column, name in proofs:
        stop = next(
            (k for k in range(index + 1, len(lines)) if lines[k][:1].strip() and not lines[k].startswith(("--", "/-"))),
            len(lines),
        )
        while stop > index + 1 and not lines[stop - 1].split("--", 1)[0].strip():
            stop -= 1
        span = range(index + first, stop + first)
        spoiled = any(
            m["pos"]["line"] in span and (m["severity"] == "error" or "declaration uses" in m["data"]) for m in messages
        ) or any(s["pos"]["line"] in span for s in sorries)
        if spoiled or (name is not None and name not in env.constants):
            continue
        end_line = lines[stop - 1].split("--", 1)[0].rstrip()
        message = msg("info", index + first, column, "Goals accomplished!")
        message["endPos"] = {"line": stop - 1 + first, "column": len(end_line)}
        out.append(message)
    return out


def deep_tree(depth: int, line: int) -> str:
    """An info tree nested `depth` levels (each level a node with one child), as JSON text."""
    leaf = json.dumps({"node": {"stx": {"range": {"start": {"line": line, "column": 0}}}}, "children": []})
    n = max(0, depth - 1)
    return "[" + '{"node": {"kind": "TacticInfo"}, "children": [' * n + leaf + "]}" * n + "]"


def big_tree(mb: float, line: int) -> list[Any]:
    """A flat info tree of about `mb` MiB of JSON."""
    leaf = {
        "node": {"stx": {"range": {"start": {"line": line, "column": 2}, "finish": {"line": line, "column": 9}}}},
        "goalsBefore": ["⊢ a + b = b + a"],
        "children": [],
    }
    size = len(json.dumps(leaf, indent=1)) + 2
    return [leaf] * max(1, int(mb * (1 << 20) / size))
