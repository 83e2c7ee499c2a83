"""`kimina-grpc db upgrade`, `kimina-grpc log export`, `kimina-grpc log stats`: the proof log from the
command line. The database comes from --url or LEAN_SERVER_DATABASE_URL (the password from the URL,
--password-file or LEAN_SERVER_DATABASE_PASSWORD_FILE). Imports only argparse until a command runs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

USAGE_ERROR = 2


def _fail(message: str) -> int:
    print(f"kimina-grpc: {message}", file=sys.stderr)
    return USAGE_ERROR


def _target(args: argparse.Namespace) -> Any:
    """The parsed URL, or a one-line error (str)."""
    from kimina_grpc import extras
    from kimina_grpc.database_url import VARIABLE, parse

    url = args.url or os.environ.get(VARIABLE, "").strip()
    if not url:
        return f"no database: set {VARIABLE} or pass --url"
    password = None
    path = args.password_file or os.environ.get("LEAN_SERVER_DATABASE_PASSWORD_FILE")
    if path:
        try:
            password = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            return f"LEAN_SERVER_DATABASE_PASSWORD_FILE: cannot read {path}: {exc.strerror or exc}"
    try:
        target = parse(url, password)
    except ValueError as exc:
        return str(exc)
    if target.backend == "postgresql" and extras.missing_module("psycopg"):
        return f"a postgresql:// log {extras.hint('log', 'psycopg')}"
    return target


def _upgrade(args: argparse.Namespace) -> int:
    import asyncio

    from kimina_grpc.database_url import VARIABLE
    from kimina_grpc.prooflog.backends import backend_for, one_line

    target = _target(args)
    if isinstance(target, str):
        return _fail(target)

    async def run() -> tuple[list[int], int]:
        db = backend_for(target, args.timeout)
        try:
            await db.connect()
            applied = await db.upgrade()
            return applied, await db.version()
        finally:
            await db.close()

    try:
        applied, version = asyncio.run(run())
    except Exception as exc:
        return _fail(f"{VARIABLE}: cannot use {target.shown}: {one_line(exc)}")
    done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to do"
    print(f"{target.shown}: proof-log schema at version {version} ({done})")
    return 0


def _when(text: str) -> datetime:
    """ISO date or time; without a zone, UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date or time (2026-01-31, 2026-01-31T12:00)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _reading(run: Callable[[Any, Any, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def go(args: argparse.Namespace) -> int:
        from kimina_grpc.database_url import VARIABLE
        from kimina_grpc.prooflog.backends import one_line
        from kimina_grpc.prooflog.read import Filter, Reader

        target = _target(args)
        if isinstance(target, str):
            return _fail(target)
        f = Filter(args.since, args.until, tuple(v.upper() for v in args.verdict), tuple(args.tag))
        try:
            with Reader(target, args.timeout) as r:
                return run(r, f, args)
        except Exception as exc:
            return _fail(f"{VARIABLE}: cannot read {target.shown}: {one_line(exc)}")

    return go


@_reading
def _export(r: Any, f: Any, args: argparse.Namespace) -> int:
    from kimina_grpc.prooflog.read import write_jsonl, write_parquet

    out = Path(args.out)
    n = write_parquet(r, f, out) if args.format == "parquet" else write_jsonl(r.rows(f), out)
    print(f"{n} rows -> {out}")
    return 0


@_reading
def _stats(r: Any, f: Any, args: argparse.Namespace) -> int:
    s = r.stats(f, problem_tag=args.problem_tag, limit=args.limit)
    if args.json:
        import json

        print(json.dumps(s, indent=2))
        return 0
    print(f"rows: {s['rows']}")
    print("by verdict:")
    for verdict, n in s["by_verdict"].items():
        print(f"  {verdict:<16}{n:>10}")
    print("by tag:")
    for key, value, n in s["by_tag"]:
        print(f"  {key}={value:<30}{n:>10}")
    print(f"pass rate per {args.problem_tag} (VALID / checked, NOT_CHECKED left out):")
    for problem, valid, n in s["pass_rate"]:
        print(f"  {problem:<40}{valid:>6}/{n:<6}{100 * valid / n:>6.1f} %")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="default: $LEAN_SERVER_DATABASE_URL")
    p.add_argument("--password-file", help="default: $LEAN_SERVER_DATABASE_PASSWORD_FILE")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to connect (default 10)")


def _filters(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--since", type=_when, help="answered at or after (ISO date/time, UTC unless a zone is given)")
    p.add_argument("--until", type=_when, help="answered before")
    p.add_argument("--verdict", action="append", default=[], help="VALID, INVALID, ... (repeatable)")
    p.add_argument(
        "--tag", action="append", default=[], type=_tag, metavar="KEY=VALUE", help="repeatable: all must match"
    )


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("db", help="the proof log's database (LEAN_SERVER_DATABASE_URL)")
    db = p.add_subparsers(dest="db_command", required=True)
    q = db.add_parser("upgrade", help="create or upgrade the proof log's tables (idempotent)")
    _common(q)
    q.set_defaults(run=_upgrade)
    p = sub.add_parser("log", help="read the proof log: export rows, print counts")
    log = p.add_subparsers(dest="log_command", required=True)
    q = log.add_parser("export", help="write the rows to a Parquet or JSON-lines file [log extra for parquet]")
    q.add_argument("out", help="the file to write")
    q.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    _filters(q)
    q.set_defaults(run=_export_checked)
    q = log.add_parser("stats", help="counts by verdict and by tag, pass rate per problem")
    _filters(q)
    q.add_argument("--problem-tag", default="problem", help="the tag that names the problem (default problem)")
    q.add_argument("--limit", type=int, default=50, help="rows per table (default 50)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=_stats)


def _export_checked(args: argparse.Namespace) -> int:
    from kimina_grpc import extras

    if args.format == "parquet" and extras.missing_module("pyarrow"):
        return _fail(f"--format parquet {extras.hint('log', 'pyarrow')}")
    return _export(args)
