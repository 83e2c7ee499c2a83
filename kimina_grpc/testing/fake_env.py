"""The stand-in's model of a Lean environment: the constants it holds (with their types and the
axioms they depend on), the core constants every header brings, the command scope (options,
namespace, section variables), the extensions a pickle loses, and name resolution."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ROOT = "_root_."


@dataclass
class Const:
    type: str
    axioms: frozenset[str] = frozenset()
    kernel_ok: bool = True
    heartbeats: int = 0
    """Kernel heartbeats (thousands) its check needs."""


# A few constants every environment has (Lean's prelude): the stand-in cannot know an import's.
_CORE = {
    name: Const(sig)
    for name, sig in {
        "Nat": ": Type",
        "Nat.succ": "(n : Nat) : Nat",
        "Int": ": Type",
        "True": ": Prop",
        "False": ": Prop",
    }.items()
}
# What `Init/Core.lean` (and the rest of Init) declares: absent under `prelude` + `import Init.Tactics`.
_INIT = {
    name: Const(sig, frozenset({name}))
    for name, sig in {
        "propext": "{a b : Prop} : (a ↔ b) → a = b",
        "Classical.choice": "{α : Sort u} : Nonempty α → α",
        "Quot.sound": "{α : Sort u} {r : α → α → Prop} {a b : α} : r a b → Quot.mk r a = Quot.mk r b",
        "Lean.ofReduceBool": "(a b : Bool) (h : Lean.reduceBool a = b) : a = b",
        "Lean.trustCompiler": ": True",
    }.items()
}
UNIVERSES = {"Classical.choice": ".{u}", "Quot.sound": ".{u}"}


@dataclass
class Env:
    """A recorded environment: what a pickle keeps (header, constants, the command scope: options,
    namespace, section variables) and the extensions it loses (hijack, reinterpret)."""

    header: str = ""
    constants: dict[str, Const] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    namespace: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    """Section variables in scope: name -> type (as `∀ binders, type`)."""
    hijacked: bool = False
    hangs: bool = False
    reinterpret: str = ""

    def after(self) -> Env:
        """The environment a command on this one starts from."""
        return Env(
            self.header,
            dict(self.constants),
            dict(self.options),
            list(self.namespace),
            dict(self.variables),
            self.hijacked,
            self.hangs,
            self.reinterpret,
        )

    def pickled(self) -> dict[str, Any]:
        return {
            "header": self.header,
            "constants": {n: [c.type, sorted(c.axioms), c.kernel_ok, c.heartbeats] for n, c in self.constants.items()},
            "options": self.options,
            "namespace": self.namespace,
            "variables": self.variables,
        }

    @staticmethod
    def unpickled(data: dict[str, Any]) -> Env:
        return Env(
            header=data["header"],
            constants={n: Const(t, frozenset(a), ok, hb) for n, (t, a, ok, hb) in data["constants"].items()},
            options=dict(data["options"]),
            namespace=list(data["namespace"]),
            variables=dict(data["variables"]),
        )

    @property
    def core(self) -> dict[str, Const]:
        """The constants the header's imports declare (as far as the stand-in knows them)."""
        return _CORE if "prelude" in self.header.split() else {**_CORE, **_INIT}

    def known(self, name: str) -> bool:
        return name in self.constants or name in self.core

    def resolve(self, name: str, namespace: list[str] | None = None) -> str | None:
        """A global constant's name as Lean resolves it: `_root_.x` is `x`; otherwise the current
        namespace's `N.x` first, then `x`. Section variables are not constants."""
        if name.startswith(ROOT):
            name = name[len(ROOT) :]
            return name if self.known(name) else None
        namespace = self.namespace if namespace is None else namespace
        for depth in range(len(namespace), -1, -1):
            candidate = ".".join([*namespace[:depth], name])
            if self.known(candidate):
                return candidate
        return None

    def constant(self, name: str) -> Const:
        return self.constants.get(name) or self.core[name]


# Core constants inside a namespace, by their last component (`succ` for `Nat.succ`).
_SHORT = {n.rsplit(".", 1)[1] for n in _CORE if "." in n}


def resolve_short_names(env: Env, sig: str, prefix: list[str]) -> tuple[str, str | None]:
    """A signature with the namespaced core constants it names by their short name written in full,
    resolved through the open namespaces (the current one and the declaration's own prefix); or the
    first such name that resolves to nothing."""
    namespace = [*env.namespace, *prefix]
    for short in sorted(_SHORT):
        pattern = re.compile(rf"(?<![\w.'@]){re.escape(short)}(?![\w'])")
        if not pattern.search(sig):
            continue
        resolved = env.resolve(short, namespace)
        if resolved is None:
            return sig, short
        sig = pattern.sub(resolved, sig)
    return sig, None


def as_type(signature: str) -> str:
    """A declaration's signature (`(x : ℕ) (h : P x) : Q x`) as the type it elaborates to
    (`∀ (x : ℕ) (h : P x), Q x`), the form a term's type prints in."""
    depth, colon = 0, -1
    for i, c in enumerate(signature):
        if c in "([{⦃":
            depth += 1
        elif c in ")]}⦄":
            depth -= 1
        elif c == ":" and depth == 0:
            colon = i
            break
    binders, result = signature[:colon].strip(), signature[colon + 1 :].strip()
    return f"∀ {binders}, {result}" if binders else result
