"""`kimina-grpc`: serve (and, as they land, check, bench, setup)."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

from pydantic import ValidationError


def _serve(args: argparse.Namespace) -> int:
    # REPLs are started with fork+exec and no Python in between: gRPC's fork handlers only log noise.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from kimina_grpc import log
    from kimina_grpc.service.server import serve
    from kimina_grpc.settings import Settings

    overrides = {k: v for k, v in (("port", args.port), ("host", args.host)) if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for err in exc.errors():
            name = "LEAN_SERVER_" + "_".join(str(p) for p in err["loc"]).upper() if err["loc"] else "settings"
            print(f"kimina-grpc: {name}: {err['msg']} (got {err.get('input')!r})", file=sys.stderr)
        return 2
    try:
        settings.repl_argv()
    except ValueError as exc:
        print(f"kimina-grpc: {exc}", file=sys.stderr)
        return 2
    log.configure(settings.log_level, settings.environment)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(settings))
    return 0


def _check(args: argparse.Namespace) -> int:
    from kimina_grpc.client.commands import check

    return check(args.files, target=args.target, api_key=args.api_key, timeout=args.timeout, as_json=args.json)


def _bench(args: argparse.Namespace) -> int:
    from kimina_grpc.client.commands import bench

    return bench(
        target=args.target,
        api_key=args.api_key,
        dataset=args.dataset,
        split=args.split,
        n=args.n,
        id_column=args.id_column,
        code_column=args.code_column,
        timeout=args.timeout,
        window=args.window,
        output=Path(args.output),
    )


def _health(args: argparse.Namespace) -> int:
    from kimina_grpc.client import KiminaClient

    with KiminaClient(args.target) as client:
        ok = client.health(args.service)
    print("SERVING" if ok else "NOT_SERVING")
    return 0 if ok else 1


def _setup(args: argparse.Namespace) -> int:
    script = Path(__file__).resolve().parents[2] / "tools" / "install_lean.sh"
    if not script.exists():
        print(f"kimina-grpc setup: {script} not found (run it from a checkout of kimina-grpc)", file=sys.stderr)
        return 2
    argv = ["bash", str(script)]
    if args.workspace:
        argv += ["--workspace", args.workspace]
    if args.lean_version:
        argv += ["--lean-version", args.lean_version]
    argv += [flag for flag, on in (("--dry-run", args.dry_run), ("--save-config", args.save_config)) if on]
    return subprocess.call(argv)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="localhost:50051", help="server address (default localhost:50051)")
    p.add_argument("--api-key", default=os.environ.get("LEAN_SERVER_API_KEY"), help="default: $LEAN_SERVER_API_KEY")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per proof (default 60)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kimina-grpc", description="Check Lean 4 proofs over gRPC.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the server (settings from LEAN_SERVER_* variables)")
    p.add_argument("--port", type=int, help="overrides LEAN_SERVER_PORT (0 picks a free port)")
    p.add_argument("--host", help="overrides LEAN_SERVER_HOST")
    p.set_defaults(run=_serve)
    p = sub.add_parser("check", help="check Lean files; exit 0 only if all are valid")
    p.add_argument("files", nargs="+", help="Lean files, or - for standard input")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    _client_args(p)
    p.set_defaults(run=_check)
    p = sub.add_parser("bench", help="stream a dataset's proofs through a server and report")
    p.add_argument("--dataset", default="Goedel-LM/Lean-workbook-proofs", help="hub name or .jsonl/.json/.parquet/.csv")
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=int, help="first N rows only")
    p.add_argument("--id-column")
    p.add_argument("--code-column")
    p.add_argument("--window", type=int, default=64, help="proofs in flight")
    p.add_argument("--output", default="bench-report", help="folder for report.json, results.jsonl, report.png")
    _client_args(p)
    p.set_defaults(run=_bench)
    p = sub.add_parser("health", help="exit 0 if the server's health service says SERVING")
    p.add_argument("--target", default="localhost:50051")
    p.add_argument("--service", default="kimina_grpc.v1.VerifierService", help="or liveness")
    p.set_defaults(run=_health)
    p = sub.add_parser("setup", help="install Lean, the REPL, Mathlib and ast_export (tools/install_lean.sh)")
    p.add_argument("--workspace", help="default: $LEAN_SERVER_WORKSPACE or ~/kimina-workspace")
    p.add_argument("--lean-version", help="vX.Y.Z (default v4.19.0)")
    p.add_argument("--dry-run", action="store_true", help="print the plan only")
    p.add_argument("--save-config", action="store_true", help="write the config the server reads")
    p.set_defaults(run=_setup)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
