"""`kimina-grpc demo`: what it sets up around `serve` (the stand-ins, no auth, loopback) and the lines it
prints once it serves, each a command that runs as printed against it."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

DEMO_MODULE = "import Mathlib.Logic.Basic\n\ntheorem not_not_intro {a : Prop} (h : a) : ¬¬a := fun hn => hn h\n"
"""The one module of the demo's stand-in exporter (the ExportAst example in docs/client.md)."""
LEAN_VERSION = "stand-in (no Lean: the stand-in REPL, kimina_grpc.testing.fake_repl)"
"""What GetServerInfo's lean_version says in the demo."""
PROOF = "theorem t : True := trivial"


def default_repls() -> int:
    """The stand-in costs next to nothing: one REPL per core (serve's default leaves a core to the server)."""
    return os.cpu_count() or 1


def environment(project: str, repls: int | None) -> dict[str, str]:
    """The LEAN_SERVER_* variables of the demo (set over the caller's)."""
    from kimina_grpc.testing import fake_ast_export_command, fake_repl_command

    module = Path(project, "Mathlib", "Logic", "Demo.lean")
    module.parent.mkdir(parents=True, exist_ok=True)
    module.write_text(DEMO_MODULE, encoding="utf-8")
    env = {
        "LEAN_SERVER_REPL_COMMAND": fake_repl_command(),
        "LEAN_SERVER_AST_EXPORT_COMMAND": fake_ast_export_command("--strict"),  # only the module it has
        "LEAN_SERVER_AST_EXPORT_PROJECT_DIR": project,
        "LEAN_SERVER_MAX_REPL_MEM": "0",
        "LEAN_SERVER_AUTH": "off",
        "LEAN_SERVER_LEAN_VERSION": LEAN_VERSION,
    }
    if repls is not None:
        env["LEAN_SERVER_MAX_REPLS"] = str(repls)
    elif not os.environ.get("LEAN_SERVER_MAX_REPLS"):
        env["LEAN_SERVER_MAX_REPLS"] = str(default_repls())
    return env


def _tool(name: str) -> str:
    """`name` when PATH finds this install's, else its full path (as `make demo` runs from .venv/bin)."""
    here = Path(sys.executable).parent / name
    found = shutil.which(name)
    if found and (not here.exists() or Path(found).resolve() == here.resolve()):
        return name
    return shlex.quote(str(here)) if here.exists() else name


def next_steps(host: str, port: int, repls: int) -> list[str]:
    """The lines printed once the demo serves."""
    if host in ("", "0.0.0.0", "::", "[::]"):  # every interface: this machine is one of them
        host = "localhost"
    target = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    client = f"KiminaClient({json.dumps(target)})"
    snippet = (
        f"from kimina_grpc.client import KiminaClient; print({client}.verify([{json.dumps(PROOF)}])[0].verdict.name)"
    )
    lines = [
        f"kimina-grpc demo: serving on {target} with the stand-in REPL ({repls} REPLs, no Lean: every proof is VALID "
        "unless it carries a directive such as `-- fake: error unsolved goals`). Try:",
        f"  echo {shlex.quote(PROOF)} | {_tool('kimina-grpc')} check --target {target} -",
        f"  {shlex.quote(sys.executable)} -c {shlex.quote(snippet)}",
    ]
    grpcurl = _tool("grpcurl")
    if shutil.which(grpcurl) or Path(grpcurl.strip("'")).exists():
        lines.append(f"  {grpcurl} -plaintext {target} kimina_grpc.v1.VerifierService/GetServerInfo")
    return lines
