"""Check a folder of .lean files in one batch call; results come back in input order.

python clients/batch.py path/to/proofs --target localhost:50051
Exit 0 if every file is VALID, 1 if not, 2 (one line on stderr) if the folder or the server is wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kimina_grpc.client import KiminaClient, KiminaError, Proof


def fail(message: str) -> int:
    print(f"batch.py: {message}", file=sys.stderr)
    return 2


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--target", default="localhost:50051")
    args = parser.parse_args()
    if not args.folder.is_dir():
        return fail(f"{args.folder}: no such folder")
    proofs = [Proof(str(p), p.read_text()) for p in sorted(args.folder.glob("*.lean"))]
    if not proofs:
        return fail(f"no .lean files in {args.folder}")
    try:
        with KiminaClient(args.target, api_key=os.environ.get("LEAN_SERVER_API_KEY")) as client:
            results = client.verify(proofs, timeout=120, diagnostics=True)
    except (KiminaError, ValueError) as exc:
        return fail(str(exc).splitlines()[0])
    for result in results:
        d = result.diagnostics
        where = "the cache" if d and d.from_cache else (d.repl_id if d and d.repl_id else "?")
        print(f"{result.id}: {result.verdict.name} in {result.time:.2f} s on {where} {result.error}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
