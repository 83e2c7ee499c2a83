"""Cache keys: a hash of everything that decides a proof's reply, and nothing that does not.

In: the version of the verdict rules (kimina_grpc/rules.py), the Lean environment (Lean version,
the project the REPL runs in, the REPL command), every field of the header cut (`Split`: the
normalised header, the body, and where each header command and the body sit in the file, since the
reply's positions are positions in the user's file), and each option that changes the reply. Out:
the id and the timeout (a hit is served only when the original check fit in the caller's timeout,
see layer.py).

What the cut drops never reaches Lean nor the reply, so it can stay out (tests/test_cache_key.py
proves each against an uncached check): CRLF (read as LF), spaces and comments inside and between
header commands (only each command's line and column are kept), a repeated import (sent once,
reported on its first line), and the blank lines between header and body (the body's first line is
kept). The reply is built from the `Split` alone, so a key over all its fields is a key over
everything of the file that changes the reply's bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import astuple
from pathlib import Path
from typing import Any

from kimina_grpc import rules
from kimina_grpc.repl import Split
from kimina_grpc.supervisor.jobs import CheckOptions

# Bump when the stored encoding or the meaning of a key changes: old entries are then never read.
KEY_PREFIX = "kimina:v1:"
# The files that pin what `import Mathlib` means in a Lake project.
PROJECT_FILES = ("lean-toolchain", "lake-manifest.json")


def environment_id(lean_version: str, repl_argv: Sequence[str], project_dir: str | Path | None) -> str:
    """The Lean environment's fingerprint. An upgraded Mathlib (a new manifest) or Lean (a new
    toolchain) changes it, so a server never serves verdicts of another environment. Read once at
    start: the REPLs already running keep what they imported."""
    digest = hashlib.sha256()
    digest.update(json.dumps([lean_version, list(repl_argv)]).encode())
    base = Path(project_dir) if project_dir is not None else Path.cwd()
    for name in PROJECT_FILES:
        path = base / name
        content = path.read_bytes() if path.is_file() else b""
        digest.update(f"\0{name}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()[:32]


def _reply_options(options: CheckOptions) -> list[Any]:
    """The options that change the reply: info tree mode, tactics, and the trust policy with its
    parameters (a VALID at CHECK says nothing about an audit). `reuse` is in too: a caller who asks
    for a fresh REPL distrusts the warm ones, and a verdict from a warm REPL must not answer it."""
    trust = options.trust
    policy = None if trust is None else [trust.level.name, trust.theorem, trust.statement, sorted(trust.allowed_axioms)]
    return [options.infotree, options.all_tactics, options.reuse, policy]


def proof_key(environment: str, split: Split, options: CheckOptions) -> str:
    # Every field of the split, so that one added later cannot be forgotten here.
    material = json.dumps(
        [rules.RULES_VERSION, environment, astuple(split), _reply_options(options)], ensure_ascii=False
    )
    return KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()
