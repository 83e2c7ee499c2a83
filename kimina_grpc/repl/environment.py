"""The environment of a REPL or exporter process: an allow-list of the server's variables (what
Lean, Lake and elan read), boxed or not. The server's own settings never pass."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping

# What Lean, Lake and elan read from the environment; nothing else reaches a REPL. KIMINA_FAKE_* are
# the stand-in REPL's knobs (test double only; no secret has that prefix).
DEFAULT_ENV_ALLOW = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "LD_LIBRARY_PATH",
    "ELAN",
    "ELAN_HOME",
    "ELAN_TOOLCHAIN",
    "LAKE",
    "LAKE_HOME",
    "LAKE_NO_CACHE",
    "LAKE_ARTIFACT_CACHE",
    "LEAN",
    "LEAN_PATH",
    "LEAN_SRC_PATH",
    "LEAN_SYSROOT",
    "LEAN_CC",
    "LEAN_AR",
    "LEAN_NUM_THREADS",
    "LEAN_STACK_SIZE_KB",
    "LEAN_ABORT_ON_PANIC",
    "KIMINA_FAKE_*",
)
# The server's own settings (the API key among them) never reach a REPL, whatever the allow-list says.
_NEVER = "LEAN_SERVER_*"
# `lake env` runs git in every dependency's checkout (Lake's PackageEntry.materialize: `git rev-parse
# HEAD`, then `git diff`), and git refuses a repository another user owns ("dubious ownership"): the
# Docker image's root-owned workspace, and in the box every file of a user it does not map (seen as
# nobody). Lake then fetches and checks out (network, writes) and fails: no REPL starts. git honours
# safe.directory from command-scope config in the environment (git >= 2.31); a proof can run git
# with any config anyway. Nothing else of `lake env` needs a write (docs/lake-in-the-box.md).
_GIT_ENV = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"}


def allowed_env(source: Mapping[str, str], allow: Iterable[str]) -> dict[str, str]:
    """The variables of `source` whose names match a pattern of `allow` (fnmatch), never LEAN_SERVER_*."""
    patterns = tuple(allow)
    return {
        k: v
        for k, v in source.items()
        if any(fnmatch.fnmatchcase(k, p) for p in patterns) and not fnmatch.fnmatchcase(k, _NEVER)
    }


def environ(
    allow: Iterable[str], extra: Mapping[str, str] | None = None, source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A process's environment: the allow-listed part of `source` (the server's), plus `extra`, with
    git's safe.directory set (see above); never LEAN_SERVER_*."""
    env = {**_GIT_ENV, **allowed_env(os.environ if source is None else source, allow)}
    env.update({k: v for k, v in (extra or {}).items() if not fnmatch.fnmatchcase(k, _NEVER)})
    return env
