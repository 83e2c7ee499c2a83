"""Test doubles for integration tests without Lean: a stand-in REPL process speaking the Lean REPL's
exact wire format (`python -m kimina_grpc.testing.fake_repl`) and helpers to point a server at it."""

from __future__ import annotations

import shlex
import sys

FAKE_REPL_MODULE = "kimina_grpc.testing.fake_repl"
FAKE_AST_EXPORT_MODULE = "kimina_grpc.testing.fake_ast_export"


def fake_repl_command(*args: str) -> str:
    """A LEAN_SERVER_REPL_COMMAND value that starts the stand-in REPL with this interpreter."""
    return shlex.join([sys.executable, "-m", FAKE_REPL_MODULE, *args])


def fake_ast_export_command() -> str:
    """A LEAN_SERVER_AST_EXPORT_COMMAND value that runs the stand-in exporter with this interpreter."""
    return shlex.join([sys.executable, "-m", FAKE_AST_EXPORT_MODULE])
