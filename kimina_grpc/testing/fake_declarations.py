"""The stand-in's second pass over a command's lines: namespaces, section variables, the queries
(`#print axioms`, `#check`) and the declarations it adds to the environment, each checked as Lean
would (a name declared twice, the kernel's verdict under `debug.skipKernelTC` and `maxHeartbeats`, an
unknown identifier in its signature) and elaborated as the process's state makes it read."""

from __future__ import annotations

from kimina_grpc.testing.fake_env import Const, resolve_short_names
from kimina_grpc.testing.fake_messages import msg
from kimina_grpc.testing.fake_queries import check, inline_options, print_axioms
from kimina_grpc.testing.fake_state import Elaboration
from kimina_grpc.testing.fake_syntax import CHECK, DECL, NAMESPACE, PRINT_AXIOMS, PROOF, VARIABLE
from kimina_grpc.testing.fake_versions import LeanVersion

KERNEL_DEFAULT = 200000
"""Lean's default `maxHeartbeats` (thousands), what the kernel runs under."""

Proof = tuple[int, int, str | None]
"""A theorem or example: its line index, its keyword's column, and the name it declared (if any)."""


def declare(e: Elaboration, version: LeanVersion) -> list[Proof]:
    """Declarations and queries, in order (only up to an `#exit`); the proofs met on the way."""
    new, messages = e.new, e.messages
    skip_kernel = e.options.get("debug.skipKernelTC") == "true"
    limit = int(e.options.get("maxHeartbeats", str(KERNEL_DEFAULT)))
    kernel_timeout = bool(e.heartbeats) and 0 < limit < e.heartbeats and not skip_kernel
    proofs: list[Proof] = []
    body = "\n".join(e.lines[: e.active])
    namespaces = new.namespace
    offset = 0
    for index, line in enumerate(e.lines[: e.active]):
        lineno = index + e.first
        start = offset
        offset += len(line) + 1
        if line.lstrip().startswith("--"):
            continue
        ns = NAMESPACE.match(line)
        if ns:
            if ns.group(1) == "namespace":
                namespaces.extend(ns.group(2).split("."))
            elif namespaces and ".".join(namespaces).endswith(ns.group(2)):
                del namespaces[len(namespaces) - len(ns.group(2).split(".")) :]
            continue
        var = VARIABLE.match(line)
        if var:
            new.variables[var.group(1)] = " ".join(var.group(2).split())
            continue
        q = PRINT_AXIOMS.search(line)
        if q:
            messages.append(print_axioms(new, q.group(1), lineno, inline_options(line[: q.start()]), version))
            continue
        q = CHECK.search(line)
        if q:
            messages.append(check(new, q.group(2), lineno, term=bool(q.group(1))))
            continue
        p = PROOF.match(line)
        if p:
            proofs.append((index, len(p.group(1)), None))
        for m in DECL.finditer(line):
            short = m.group(1)
            name = ".".join([*namespaces, short])
            col = m.start(1)
            if new.known(name):
                messages.append(msg("error", lineno, col, f"'{name}' has already been declared"))
                continue
            if e.kernel_reject and not skip_kernel:
                messages.append(msg("error", lineno, col, f"(kernel) declaration type mismatch, '{name}'"))
                continue
            if kernel_timeout:
                messages.append(msg("error", lineno, col, "(kernel) deterministic timeout"))
                continue
            sig_start = start + m.end(1)
            sig_end = body.find(":=", sig_start)
            sig = " ".join(body[sig_start : sig_end if sig_end >= 0 else len(body)].split())
            # `theorem Nat.t` opens namespace `Nat` for its own signature (expandDeclNamespace?).
            sig, unknown = resolve_short_names(new, sig, name.split(".")[:-1])
            if unknown is not None:
                messages.append(msg("error", lineno, col, f"unknown identifier '{unknown}'"))
                continue
            if e.poison is not None:
                sig = sig.replace(*e.poison)
            if new.reinterpret:
                sig += f" [{new.reinterpret}]"
            axioms = e.axioms_of.get(short, e.axioms_of.get(name, frozenset()))
            if line.lstrip().startswith("axiom"):
                axioms |= {name}
            if e.uses_sorry:
                axioms |= {"sorryAx"}
            new.constants[name] = Const(sig, axioms, kernel_ok=not e.kernel_reject, heartbeats=e.heartbeats)
            if p:
                proofs[-1] = (index, proofs[-1][1], name)
    return proofs
