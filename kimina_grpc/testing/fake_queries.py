"""The stand-in's answers to queries about an environment's constants: `#print axioms NAME` (as each
Lean version prints it, or as a proof that redefined it makes it answer) and `#check [@]NAME`."""

from __future__ import annotations

import re
import time
from typing import Any

from kimina_grpc.testing.fake_env import ROOT, UNIVERSES, Env, as_type
from kimina_grpc.testing.fake_messages import msg
from kimina_grpc.testing.fake_versions import LeanVersion

_CLEAN = "[propext, Classical.choice, Quot.sound]"
_WIDTH = 120  # the REPL renders messages at Format's default width (REPL/JSON.lean)
_MODULE_REFUSAL = (
    "cannot use `#print axioms` in a `module`; consider temporarily removing the `module` header or "
    "placing the command in a separate file"
)


def print_axioms(env: Env, name: str, line: int, inline: dict[str, str], version: LeanVersion) -> dict[str, Any]:
    while env.hangs:
        time.sleep(3600)
    if env.hijacked:
        return msg("info", line, 0, f"'{name.removeprefix(ROOT)}' depends on axioms: {_CLEAN}")
    if env.header.split()[:1] == ["module"] and version.module_refuses_print_axioms:
        return msg("error", line, 0, _MODULE_REFUSAL)
    resolved = env.resolve(name)
    if resolved is None:
        return msg("error", line, 14, f"unknown constant '{name}'")
    const = env.constant(resolved)
    if not const.axioms:
        return msg("info", line, 0, f"'{resolved}' does not depend on any axioms")
    # From v4.30 the names are printed as constants (`MessageData.ofConstName`): `pp.universes`
    # shows their universe parameters.
    universes = version.axioms_as_constants and {**env.options, **inline}.get("pp.universes") == "true"
    items = [a + (UNIVERSES.get(a, "") if universes else "") for a in sorted(const.axioms)]
    head = f"'{resolved}' depends on axioms: "
    text = head + "[" + ", ".join(items) + "]"
    if len(text) > _WIDTH:  # `MessageData.ofList`: a group that breaks after each comma, nested 1
        text = head + "[" + ",\n ".join(items) + "]"
    return msg("info", line, 0, text)


def check(env: Env, name: str, line: int, *, term: bool) -> dict[str, Any]:
    """`#check NAME` prints a global constant's signature (`NAME binders : type`); `#check @NAME`
    elaborates a term, where section variables come first."""
    if term and name in env.variables:
        return msg("info", line, 0, f"{name} : {env.variables[name]}")
    resolved = env.resolve(name)
    if resolved is None:
        return msg("error", line, 0, f"unknown identifier '{name}'")
    const = env.constant(resolved)
    if term:
        return msg("info", line, 0, f"@{resolved} : {as_type(const.type)}")
    return msg("info", line, 0, f"{resolved}{UNIVERSES.get(resolved, '')} {const.type}")


def inline_options(prefix: str) -> dict[str, str]:
    """The options `set_option NAME VALUE in` chained before a command on its line."""
    return dict(re.findall(r"set_option\s+(\S+)\s+(\S+)\s+in\b", prefix))
