"""Regenerate the committed gRPC code from protos/ (run through `make proto`).

The folder tree under protos/ mirrors the Python package, so the generated imports
(`from kimina_grpc.v1 import verifier_pb2`) work unchanged once written at the top level.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT


def main() -> int:
    # The mypy plugins live beside the interpreter running this script (the project's venv).
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--mypy_out={OUT}",
        f"--mypy_grpc_out={OUT}",
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        print(f"protoc failed ({code})", file=sys.stderr)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
