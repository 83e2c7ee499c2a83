"""The stand-in's first pass over a command's lines: what is refused before anything is declared
(`import` after the header, a header keyword where a command should be), where `#exit` stops it,
the options it sets, its `sorry`s, and its `-- fake:` directives -- the messages they add, what they
say of the command's declarations (axioms, sorryAx, the kernel), the extensions they leave in the
environment, and the process directives, which act at once (fake_process)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kimina_grpc.testing import fake_tactics
from kimina_grpc.testing.fake_attacks import ATTACKS, attack
from kimina_grpc.testing.fake_messages import big_tree, deep_tree, msg, sorry_at
from kimina_grpc.testing.fake_process import Outcome, command_directive
from kimina_grpc.testing.fake_state import Elaboration, ReplProcess
from kimina_grpc.testing.fake_syntax import DIRECTIVE, HEADER_WORD, IMPORT, INVALID_IMPORT, SET_OPTION, SORRY


@dataclass(frozen=True)
class Stop:
    """The command ends here: with this reply, or with none (the process wrote its own)."""

    reply: dict[str, Any] | None


def scan(process: ReplProcess, e: Elaboration, *, wants_infotree: bool) -> Stop | None:
    """Go through the command's lines once, in order; `e.active` is set to where `#exit` stops it."""
    lines = e.lines
    e.active = len(lines)
    for index in range(len(lines)):
        line, lineno = lines[index], index + e.first
        if IMPORT.match(line):
            e.messages.append(msg("error", lineno, 0, INVALID_IMPORT))
            continue
        if HEADER_WORD.match(line):  # e.g. `module` before Lean 4.22, where it is no header keyword
            e.messages.append(msg("error", lineno, 0, "unexpected identifier; expected command"))
            continue
        if line.strip().startswith("#exit"):
            e.messages.append(msg("warning", lineno, 0, "using 'exit' to interrupt Lean"))
            e.active = index
            break
        line = _set_options(process, e, index)
        for m in SORRY.finditer(line.split("--", 1)[0]):
            e.uses_sorry = True
            goal = fake_tactics.sorry_goal(line, m.start())
            e.sorries.append(sorry_at(lineno, m.start(), process.proof_state(goal), goal))
            if e.options.get("warn.sorry") != "false":
                e.messages.append(msg("warning", lineno, m.start(), "declaration uses `sorry`"))
        d = DIRECTIVE.match(line)
        if d is None:
            continue
        verb, arg = d.group(1), d.group(2)
        outcome = command_directive(verb, arg, memory=process.memory, next_env=len(process.envs))
        if outcome is Outcome.REPLIED:
            return Stop(None)
        if outcome is Outcome.NOT_MINE:
            stop = _directive(process, e, verb, arg, lineno, wants_infotree=wants_infotree)
            if stop is not None:
                return stop
    return None


def _set_options(process: ReplProcess, e: Elaboration, index: int) -> str:
    """Apply the line's `set_option`s (one the Lean version lacks is an error, and the command
    under its `in` is not elaborated); the line as it is then."""
    lines, line = e.lines, e.lines[index]
    for o in SET_OPTION.finditer(line.split("--", 1)[0]):
        name, value, scoped = o.groups()
        if not process.version.knows_option(name):
            e.messages.append(msg("error", index + e.first, o.start(1), f"unknown option '{name}'"))
            if scoped:  # the command under `in` (to the next blank line here) is not elaborated
                line = lines[index] = line[: o.start()]
                for k in range(index + 1, len(lines)):
                    if not lines[k].strip():
                        break
                    lines[k] = ""
            break
        e.options[name] = value
        if not scoped:
            e.new.options[name] = value
    return line


def _directive(
    process: ReplProcess, e: Elaboration, verb: str, arg: str, lineno: int, *, wants_infotree: bool
) -> Stop | None:
    """A directive about what Lean answers (not about the process)."""
    if verb in ("infotree-depth", "infotree-mb") and wants_infotree:
        e.infotree = deep_tree(int(arg), lineno) if verb == "infotree-depth" else big_tree(float(arg), lineno)
    elif verb == "output":
        e.messages.append(msg("info", lineno, 0, "x" * int(float(arg) * (1 << 20))))
    elif verb == "messages":
        count, _, chars = arg.partition(" ")
        text = "y" * int(chars or 8)
        e.messages.extend(msg("info", lineno, 0, text) for _ in range(int(count)))
    elif verb == "position":
        at, _, col = arg.partition(" ")
        e.messages.append(msg("info", int(at), int(col or 0), "far away"))
    elif verb == "repl-error":
        return Stop({"message": arg or "Unknown environment."})
    elif verb in ATTACKS:
        e.messages.append(msg("info", lineno, 0, attack(verb, arg)))
    elif verb in ("error", "warning", "info"):
        at, _, text = arg.partition(" ")
        if at.isdigit():
            e.messages.append(msg(verb, int(at), 0, text or f"fake {verb}"))
        else:
            e.messages.append(msg(verb, lineno, 0, arg or f"fake {verb}"))
    elif verb == "sorry":
        sorry_line = int(arg) if arg.isdigit() else lineno
        e.sorries.append(sorry_at(sorry_line, 2, process.proof_state("⊢ False"), "⊢ False"))
        e.messages.append(msg("warning", sorry_line, 0, "declaration uses `sorry`"))
        e.uses_sorry = True
    elif verb == "sorry-ax":
        e.uses_sorry = True
        if e.options.get("warn.sorry") != "false":
            e.messages.append(msg("warning", lineno, 0, "declaration uses `sorry`"))
    elif verb == "axioms":
        name, *names = arg.replace(",", " ").split()
        e.axioms_of[name] = frozenset(names)
    elif verb == "kernel-reject":
        e.kernel_reject = True
    elif verb == "kernel-heartbeats":
        e.heartbeats = int(arg)
    elif verb == "poison":
        old, _, replacement = arg.partition(" => ")
        process.poison = (old, replacement)
    elif verb == "hijack-print-axioms":
        e.new.hijacked = True
    elif verb == "hang-print-axioms":
        e.new.hangs = True
    elif verb == "reinterpret":
        e.new.reinterpret = arg
    elif (tactic_only := fake_tactics.command_directive(verb, lineno)) is not None:
        e.messages.append(tactic_only)
    return None
