"""`kimina-grpc`: serve (and, as they land, check, bench, setup)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from pydantic import ValidationError


def _serve(args: argparse.Namespace) -> int:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kimina-grpc", description="Check Lean 4 proofs over gRPC.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the server (settings from LEAN_SERVER_* variables)")
    p.add_argument("--port", type=int, help="overrides LEAN_SERVER_PORT (0 picks a free port)")
    p.add_argument("--host", help="overrides LEAN_SERVER_HOST")
    p.set_defaults(run=_serve)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
