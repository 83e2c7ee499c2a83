"""tools/install_lean.sh's world: stand-ins for curl, git, elan and lake on PATH that record their
calls (the `env` fixture; test files that use it import it by name), and the calls they recorded."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# `git tag` in leanprover-community/repl at 8948401 (v4.33.0-rc2): no v4.11.0 to v4.13.0, v4.20.0 or
# v4.23.0; v4.10.0-rc1 predates the flush fix (4fc1e6d, first tagged in v4.10.0). Mathlib and the
# ast_export fork are given the same versions unless a test says otherwise.
REAL_REPL_TAGS = (
    "v4.3.0 v4.4.0 v4.4.0-rc1 v4.5.0 v4.6.0 v4.7.0 v4.7.0-rc1 v4.8.0 v4.9.0 v4.9.0-rc1 v4.10.0 v4.10.0-rc1 "
    "v4.11.0-rc1 v4.14.0 v4.15.0 v4.15.0-rc1 v4.16.0 v4.16.0-rc2 v4.17.0 v4.17.0-rc1 v4.18.0 v4.18.0-rc1 "
    "v4.19.0 v4.19.0-rc2 v4.21.0 v4.21.0-rc3 v4.22.0 v4.22.0-rc2 v4.22.0-rc4 v4.23.0-rc2 v4.24.0 v4.24.0-rc1 "
    "v4.25.0 v4.25.0-rc2 v4.25.1 v4.26.0 v4.26.0-rc1 v4.26.0-rc2 v4.27.0 v4.27.0-rc1 v4.28.0 v4.28.0-rc1 "
    "v4.29.0 v4.29.0-rc1 v4.29.0-rc2 v4.29.0-rc3 v4.29.0-rc4 v4.29.0-rc6 v4.29.0-rc7 v4.29.0-rc8 v4.30.0 "
    "v4.30.0-rc1 v4.30.0-rc2 v4.31.0 v4.31.0-rc1 v4.31.0-rc2 v4.32.0 v4.32.0-rc1 v4.33.0-rc1 v4.33.0-rc2"
)


FAKE = r"""#!/usr/bin/env bash
# Stand-in for {name}: record the call, then act just enough.
echo "{name} $* @ $(pwd)" >> "$FAKE_LOG"
# FAKE_<WHAT>_<REPO>: REPL, MATHLIB4 or AST_EXPORT, from the URL's last part.
repo_var() { local u; u=$(basename "$1" | tr '[:lower:]' '[:upper:]'); echo "FAKE_$2_$u"; }
case "{name}" in
  git)
    if [ "$1" = ls-remote ]; then
      for a in "$@"; do case "$a" in *://*) url=$a ;; esac; done
      if [ -n "$FAKE_OFFLINE" ]; then
        echo "fatal: unable to access '$url/': Could not resolve host: github.com" >&2; exit 128
      fi
      if [ "$(basename "$url")" = "$FAKE_NEEDS_AUTH" ]; then
        [ "$GIT_TERMINAL_PROMPT" = 0 ] || { echo "fake git: waiting for a password at the terminal" >&2; exit 99; }
        echo "fatal: could not read Username for 'https://github.com': terminal prompts disabled" >&2; exit 128
      fi
      var=$(repo_var "$url" TAGS)
      kind=tags; [ "$(basename "$url")" = ast_export ] && kind=heads  # the fork keeps branches
      for t in ${!var-$FAKE_TAGS}; do printf 'abc123\trefs/%s/%s\n' "$kind" "$t"; done
      echo "deadbee	refs/tags/nightly-testing"
      exit 0
    fi
    [ "$1" = clone ] || exit 0
    dest="${@: -1}"
    case "$dest" in *"$FAKE_FAIL_CLONE"*) [ -n "$FAKE_FAIL_CLONE" ] && { echo "network down" >&2; exit 128; } ;; esac
    var=$(repo_var "${@: -2:1}" TOOLCHAIN)
    mkdir -p "$dest" && echo "${!var-leanprover/lean4:$5}" > "$dest/lean-toolchain"
    case "$dest" in *ast_export*) echo 'require mathlib from git "..."' > "$dest/lakefile.lean" ;; esac ;;
  curl)
    out=""; while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
    {
      echo '#!/usr/bin/env bash'
      echo 'mkdir -p "$HOME/.elan/bin" && cp "$FAKE_BIN/elan.real" "$HOME/.elan/bin/elan"'
      echo 'echo "elan-init $*" >> "$FAKE_LOG"'
    } > "$out" ;;
  elan)
    list="$HOME/.elan/toolchains.list"
    case "$1 $2" in
      "toolchain list") if [ -s "$list" ]; then cat "$list"; else echo "no installed toolchains"; fi ;;
      "toolchain install")
        grep -qxF "$3" "$list" 2>/dev/null && { echo "error: '$3' is already installed" >&2; exit 1; }
        echo "$3" >> "$list" ;;
    esac ;;
  lake)
    if [ "$1 $2 $3" = "exe cache get" ] && [ -n "$FAKE_CACHE_FAILS" ]; then exit 1; fi
    if [ "$1" = build ] && [ -n "$FAKE_SLEEP_BUILD" ]; then
      case "$(pwd)" in *"$FAKE_SLEEP_BUILD"*) "$FAKE_PYTHON" -c "$SLEEPER" "$FAKE_LOG.sleeping" ;; esac
    fi
    if [ "$1" = build ] && [ -n "$FAKE_FAIL_BUILD" ]; then
      case "$(pwd)" in *"$FAKE_FAIL_BUILD"*) echo "error: build failed" >&2; exit 1 ;; esac
    fi ;;
esac
exit 0
"""


# The build that hangs (FAKE_SLEEP_BUILD) until Ctrl-C. It says it sleeps only once SIGINT kills it:
# with `touch flag; sleep 60`, a SIGINT landing between the two reached the shell before `sleep`
# existed, and the `sleep` then held the test's pipes for its whole minute.
SLEEPER = (
    "import pathlib, signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_DFL);"
    " pathlib.Path(sys.argv[1]).touch(); time.sleep(60)"
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("git", "curl", "lake"):
        (bin_dir / name).write_text(FAKE.replace("{name}", name))
        (bin_dir / name).chmod(0o755)
    (bin_dir / "elan.real").write_text(FAKE.replace("{name}", "elan"))
    (bin_dir / "elan.real").chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("LEAN_SERVER_", "KIMINA_", "ELAN_", "FAKE_"))}
    return {
        **keep,
        "HOME": str(home),
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_BIN": str(bin_dir),
        "FAKE_TAGS": REAL_REPL_TAGS,
        "KIMINA_MIN_DISK_GB": "0",
        "FAKE_PYTHON": sys.executable,
        "SLEEPER": SLEEPER,
    }


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env["FAKE_LOG"])
    return [line.split(" @ ")[0] for line in path.read_text().splitlines()] if path.exists() else []
