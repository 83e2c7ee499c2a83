#!/usr/bin/env bash
# Install the wheel as users do, outside the checkout: the client extra alone must run check, health and
# --version, and name the missing extra for bench; the server extra must run setup (the installer ships
# inside the wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip wheel -q --no-deps . -w "$tmp/dist"
wheel=$(ls "$tmp"/dist/kimina_grpc-*.whl)
cd "$tmp"  # nothing of the checkout on sys.path

"$PY" -m venv "$tmp/client"
"$tmp/client/bin/pip" install -q "$wheel"
kg="$tmp/client/bin/kimina-grpc"
"$kg" --version
"$kg" --version -v >"$tmp/out"
grep -qx "contract: kimina_grpc.v1" "$tmp/out"
"$kg" check --help >/dev/null
expect_one_line() {  # expect_one_line WANTED_TEXT CMD...: exit 2 and one line on stderr with that text
  local want=$1 code=0
  shift
  "$@" 2>"$tmp/err" >/dev/null || code=$?
  [ "$code" -eq 2 ] || { echo "check_wheel: $* exited $code, not 2" >&2; cat "$tmp/err" >&2; exit 1; }
  if [ "$(wc -l <"$tmp/err")" -ne 1 ] || ! grep -q "$want" "$tmp/err"; then
    echo "check_wheel: $* did not print one line with '$want':" >&2
    cat "$tmp/err" >&2
    exit 1
  fi
  cat "$tmp/err"
}
expect_one_line "no server at 127.0.0.1:1 (connection refused)" "$kg" health --target 127.0.0.1:1
expect_one_line "speaks gRPC, not HTTP" "$kg" health --target http://localhost:8000
# The reward functions need the client alone: no trainer, no datasets.
"$tmp/client/bin/python" -c "import sys, kimina_grpc.rewards; assert not {'datasets', 'trl', 'verl', 'torch'} & set(sys.modules)"
"$kg" bench --help >/dev/null
# The hint names the wheel this install came from (kimina_grpc is not on PyPI).
expect_one_line "m pip install '$wheel\[bench\]'" "$kg" bench
expect_one_line "m pip install '$wheel\[server\]'" "$kg" serve

"$PY" -m venv "$tmp/server"
"$tmp/server/bin/pip" install -q "${wheel}[server]"
"$tmp/server/bin/kimina-grpc" setup --dry-run --workspace "$tmp/ws" >"$tmp/out"
grep -q "^plan: Lean v" "$tmp/out"
# The proof log's migrations ship as package data: `db upgrade` from the wheel creates the tables.
"$tmp/server/bin/kimina-grpc" db upgrade --url "sqlite:///$tmp/log.db" | grep -q "version 1 (applied 1)"
echo "check_wheel: the client and server installs work from the wheel"
