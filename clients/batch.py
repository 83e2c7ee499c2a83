"""Check a folder of .lean files in one batch call; results come back in input order.

python clients/batch.py path/to/proofs --target localhost:50051
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kimina_grpc.client import KiminaClient, Proof


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--target", default="localhost:50051")
    args = parser.parse_args()
    proofs = [Proof(str(p), p.read_text()) for p in sorted(args.folder.glob("*.lean"))]
    with KiminaClient(args.target, api_key=os.environ.get("LEAN_SERVER_API_KEY")) as client:
        for result in client.verify(proofs, timeout=120, diagnostics=True):
            where = result.diagnostics.repl_id if result.diagnostics else "?"
            print(f"{result.id}: {result.verdict.name} in {result.time:.2f} s on {where} {result.error}")


if __name__ == "__main__":
    main()
