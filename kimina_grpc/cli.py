"""`kimina-grpc`: serve, demo, setup, check, bench, health.

Each command imports only what it needs: `check`, `health` and `--version` run with the client's
dependencies alone (`pip install kimina_grpc`); a command whose extra is missing says which one to
install, in one line, and exits 2.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kimina_grpc import __version__, extras

USAGE_ERROR = 2
DEMO_HINT = "to try the API without Lean: kimina-grpc demo"


def _fail(message: str) -> int:
    print(f"kimina-grpc: {message}", file=sys.stderr)
    return USAGE_ERROR


def _missing_extra(extra: str) -> str | None:
    """The one-line hint when a module of `extra` is not installed, else None. Looked up, not imported:
    `bench` must set HF_HUB_OFFLINE before `datasets` is imported."""
    module = extras.missing(extra)
    return f"this command {extras.hint(extra, module)}" if module else None


def needs(extra: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Run the command only when its extra is installed."""

    def wrap(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        def checked(args: argparse.Namespace) -> int:
            hint = _missing_extra(extra)
            return _fail(hint) if hint else run(args)

        return checked

    return wrap


def installer_path() -> Path:
    """tools/install_lean.sh as shipped inside the package (one file: the package's copy is a link to
    the top-level script in a checkout, the script itself in a wheel)."""
    return Path(str(importlib.resources.files("kimina_grpc") / "tools" / "install_lean.sh"))


def run_installer(
    *, workspace: str | None, lean_version: str | None, dry_run: bool = False, save_config: bool = False
) -> int:
    script = installer_path()
    if not script.is_file():
        return _fail(f"{script} is missing from this install of kimina_grpc (reinstall it)")
    argv = ["bash", str(script)]
    if workspace:
        argv += ["--workspace", workspace]
    if lean_version:
        argv += ["--lean-version", lean_version]
    argv += [flag for flag, on in (("--dry-run", dry_run), ("--save-config", save_config)) if on]
    return subprocess.call(argv)


def _settings(args: argparse.Namespace) -> Any:
    """Settings from the environment, or None after printing one line per bad variable."""
    import re

    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from kimina_grpc.settings import Settings

    overrides = {k: v for k, v in (("port", args.port), ("host", args.host)) if v is not None}
    try:
        return Settings(**overrides)
    except SettingsError as exc:
        # pydantic-settings decodes JSON-valued variables itself and names only the field.
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"LEAN_SERVER_{field.group(1).upper()}" if field else "a LEAN_SERVER_* variable"
        got = os.environ.get(name)
        print(f"kimina-grpc: {name}: not valid JSON" + (f" (got {got!r})" if got is not None else ""), file=sys.stderr)
        return None
    except ValidationError as exc:
        for err in exc.errors():
            message = str(err["msg"]).removeprefix("Value error, ")
            if err["loc"]:
                name = "LEAN_SERVER_" + "_".join(str(p) for p in err["loc"]).upper()
                print(f"kimina-grpc: {name}: {message} (got {err.get('input')!r})", file=sys.stderr)
            else:  # a check across variables: its message names them; the input is every setting
                print(f"kimina-grpc: {message}", file=sys.stderr)
        return None


@needs("server")
def _serve(args: argparse.Namespace) -> int:
    # REPLs are started with fork+exec and no Python in between: gRPC's fork handlers only log noise.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    import asyncio

    from kimina_grpc import log
    from kimina_grpc.prooflog.errors import ProofLogError
    from kimina_grpc.repl.sandbox import SandboxUnavailable
    from kimina_grpc.service.posture import BindError
    from kimina_grpc.service.server import serve

    settings = _settings(args)
    if settings is None:
        return USAGE_ERROR
    try:
        settings.resolved_api_key()  # before a long install: a server that would refuse to start says so now
    except ValueError as exc:
        return _fail(str(exc))
    if settings.repl_command is None:
        settings = _install_if_needed(settings, args)
        if settings is None:
            return USAGE_ERROR
    try:
        argv, cwd = settings.repl_argv()
        settings.resolved_api_key()
    except ValueError as exc:
        return _fail(str(exc))
    if settings.repl_command is None:
        # Said at once; the server then is not ready (health NOT_SERVING, the reason in GetServerInfo)
        # until the path appears, and turns ready without a restart (a volume mounted late, a build
        # that finishes).
        for path, what, variable in (
            (Path(argv[-1]), "REPL binary", "REPL_PATH"),
            (Path(cwd or "."), "Lean project", "PROJECT_DIR"),
        ):
            if not path.exists():
                print(
                    f"kimina-grpc: the {what} {path} does not exist (check LEAN_SERVER_WORKSPACE or"
                    f" LEAN_SERVER_{variable}); not ready until it does",
                    file=sys.stderr,
                )
    log.configure(settings.log_level, settings.environment)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve(settings, getattr(args, "on_serving", None)))
    except (BindError, SandboxUnavailable, ProofLogError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:  # before the server's own signal handling is in place
        print("kimina-grpc: interrupted", file=sys.stderr)
        return 130
    return 0


def _install_if_needed(settings: Any, args: argparse.Namespace) -> Any:
    """The settings to serve with, after running the installer when no workspace exists (then it is
    saved in the config) or when one was left incomplete (no .kimina/complete: it resumes); None
    after printing why it failed. A complete workspace, or one not made by the installer (no
    .kimina/), is never touched."""
    workspace = settings.resolved_workspace()
    if workspace is None and not (settings.repl_path and settings.project_dir):
        print("kimina-grpc: no Lean workspace found; installing one (tools/install_lean.sh)", file=sys.stderr)
        code = run_installer(workspace=None, lean_version=settings.lean_version, save_config=True)
    elif workspace is not None and (workspace / ".kimina").is_dir() and not (workspace / ".kimina/complete").exists():
        print(f"kimina-grpc: {workspace}: an interrupted install; resuming it (tools/install_lean.sh)", file=sys.stderr)
        marker = workspace / ".kimina/version"
        version = marker.read_text().strip() if marker.is_file() else settings.lean_version
        code = run_installer(workspace=str(workspace), lean_version=version)
    else:
        return settings
    if code != 0:
        _fail(f"Lean set-up failed (see the line above); {DEMO_HINT}")
        return None
    return _settings(args)


@needs("server")
def _demo(args: argparse.Namespace) -> int:
    """`serve` with the stand-in REPL and the stand-in ast_export (kimina_grpc.testing) instead of Lean,
    on 127.0.0.1, without auth: the API on a machine without Lean (see kimina_grpc/demo.py)."""
    import tempfile

    from kimina_grpc import demo

    if args.repls is not None and args.repls < 1:
        return _fail(f"--repls must be at least 1 (got {args.repls})")
    with tempfile.TemporaryDirectory(prefix="kimina-demo-") as project:
        for name in ("LEAN_SERVER_API_KEY", "LEAN_SERVER_API_KEY_FILE"):
            os.environ.pop(name, None)  # auth is off: a key a client exported is not the server's
        os.environ.update(demo.environment(project, args.repls))
        os.environ.setdefault("LEAN_SERVER_ENVIRONMENT", "dev")
        os.environ.setdefault("LEAN_SERVER_HOST", "127.0.0.1")

        def serving(settings: Any, port: int) -> None:
            print("\n".join(demo.next_steps(settings.host, port, settings.max_repls)), file=sys.stderr, flush=True)

        args.on_serving = serving
        return int(_serve(args))


@needs("server")
def _setup(args: argparse.Namespace) -> int:
    """The installer's own exit status: 2 when it refused before changing anything (a bad version,
    no network), 1 when a step failed (running it again resumes)."""
    try:
        return run_installer(
            workspace=args.workspace, lean_version=args.lean_version, dry_run=args.dry_run, save_config=args.save_config
        )
    except KeyboardInterrupt:  # Ctrl-C reaches the installer too: it names the step to resume from
        print("kimina-grpc: setup interrupted; run it again to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # no bash
        return _fail(f"cannot run the installer: {exc}")


def _tls(args: argparse.Namespace) -> dict[str, Any]:
    """The client's TLS arguments from --tls, --ca, --cert, --key."""
    return {"tls": args.tls, "ca": args.ca, "cert": args.cert, "key": args.key}


def _check(args: argparse.Namespace) -> int:
    from kimina_grpc.client.commands import check

    return check(
        args.files,
        target=args.target,
        api_key=args.api_key,
        timeout=args.timeout,
        as_json=args.json,
        trust=args.trust,
        statement=args.statement,
        theorem=args.theorem,
        allowed_axioms=tuple(args.allow_axiom),
        **_tls(args),
    )


@needs("bench")
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
        trust=args.trust,
        statement_column=args.statement_column,
        cache=not args.no_cache,
        **_tls(args),
    )


def _health(args: argparse.Namespace) -> int:
    from kimina_grpc.client import KiminaClient, KiminaError
    from kimina_grpc.client.commands import error_line, uses_tls
    from kimina_grpc.client.reach import unreachable

    down = unreachable(args.target)
    if down:
        return _fail(down)
    try:
        client = KiminaClient(args.target, **_tls(args))
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    with client:
        try:
            status = client.health_status(args.service)
        except KiminaError as exc:
            return _fail(error_line(exc, args.target, uses_tls(_tls(args))))
    print(status)
    return 0 if status == "SERVING" else 1


def _version(verbose: bool) -> str:
    text = f"kimina-grpc {__version__}"
    if verbose:
        from kimina_grpc.v1 import verifier_pb2

        text += f"\ncontract: {verifier_pb2.DESCRIPTOR.package}"
    return text


def _tls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls", action="store_true", help="speak TLS (trusting the system's roots, or --ca)")
    p.add_argument("--ca", help="PEM file of the CA to trust (implies --tls)")
    p.add_argument("--cert", help="PEM client certificate, for mutual TLS (with --key)")
    p.add_argument("--key", help="PEM key of --cert")


def _client_args(p: argparse.ArgumentParser) -> None:
    _tls_args(p)
    p.add_argument("--target", default="localhost:50051", help="server host:port (default localhost:50051; port 50051)")
    p.add_argument("--api-key", default=os.environ.get("LEAN_SERVER_API_KEY"), help="default: $LEAN_SERVER_API_KEY")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per proof (default 60)")


def _trust_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust",
        choices=("check", "audit", "judge"),
        help="what VALID must vouch for: Lean's messages (check), also axioms and statement in the "
        "proof's environment (audit), also in a clean REPL the proof cannot reach (judge); "
        "default: the server's",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kimina-grpc", description="Check Lean 4 proofs over gRPC.")
    top.add_argument("--version", action="store_true", help="print the version (with -v: also the contract)")
    top.add_argument("-v", "--verbose", action="store_true")
    sub = top.add_subparsers(dest="command")
    p = sub.add_parser("serve", help="run the server (settings from LEAN_SERVER_* variables) [server extra]")
    p.add_argument("--port", type=int, help="overrides LEAN_SERVER_PORT (0 picks a free port)")
    p.add_argument("--host", help="overrides LEAN_SERVER_HOST")
    p.set_defaults(run=_serve)
    p = sub.add_parser(
        "demo",
        help="serve with the stand-in REPL and ast_export instead of Lean, on 127.0.0.1, no auth [server extra]",
    )
    p.add_argument("--port", type=int, help="overrides LEAN_SERVER_PORT (default 50051; 0 picks a free port)")
    p.add_argument("--host", help="overrides LEAN_SERVER_HOST (default 127.0.0.1)")
    p.add_argument("--repls", type=int, help="stand-in REPLs (default: one per core, or LEAN_SERVER_MAX_REPLS)")
    p.set_defaults(run=_demo)
    p = sub.add_parser("check", help="check Lean files; exit 0 only if all are valid")
    p.add_argument("files", nargs="+", help="Lean files, or - for standard input")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    _trust_arg(p)
    p.add_argument("--statement", metavar="FILE", help="the reference statement every file must prove (audit, judge)")
    p.add_argument("--theorem", help="the theorem to audit (default: the one the statement declares)")
    p.add_argument(
        "--allow-axiom",
        action="append",
        default=[],
        metavar="NAME",
        help="also allow this axiom (repeatable), e.g. Lean.ofReduceBool for native_decide",
    )
    _client_args(p)
    p.set_defaults(run=_check)
    p = sub.add_parser("bench", help="stream a dataset's proofs through a server and report [bench extra]")
    p.add_argument("--dataset", default="Goedel-LM/Lean-workbook-proofs", help="hub name or .jsonl/.json/.parquet/.csv")
    p.add_argument("--split", help="of a hub dataset (default train)")
    p.add_argument("--n", type=int, help="first N rows only (at least 1)")
    p.add_argument("--id-column")
    p.add_argument("--code-column")
    p.add_argument("--window", type=int, default=64, help="proofs in flight")
    p.add_argument("--output", default="bench-report", help="folder for report.json, results.jsonl, report.png")
    _trust_arg(p)
    p.add_argument("--statement-column", help="the column of each row's reference statement (audit, judge)")
    p.add_argument("--no-cache", action="store_true", help="check every proof with Lean (no cached or shared answers)")
    _client_args(p)
    p.set_defaults(run=_bench)
    p = sub.add_parser("health", help="exit 0 if the server's health service says SERVING")
    p.add_argument("--target", default="localhost:50051")
    p.add_argument("--service", default="kimina_grpc.v1.VerifierService", help="or liveness")
    _tls_args(p)
    p.set_defaults(run=_health)
    p = sub.add_parser("setup", help="install Lean, the REPL, Mathlib and ast_export (tools/install_lean.sh)")
    p.add_argument("--workspace", help="default: $LEAN_SERVER_WORKSPACE or ~/kimina-workspace")
    p.add_argument("--lean-version", help="vX.Y.Z (default v4.19.0)")
    p.add_argument("--dry-run", action="store_true", help="print the plan only")
    p.add_argument("--save-config", action="store_true", help="write the config the server reads")
    p.set_defaults(run=_setup)
    from kimina_grpc.prooflog.commands import add_parsers  # db upgrade, log export, log stats

    add_parsers(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    # gRPC core's own log lines (handshake failures, ...) would come before our one line; a user who
    # wants them sets GRPC_VERBOSITY. It is read when grpc is first imported: nothing above imports it.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    top = parser()
    args = top.parse_args(argv)
    if args.version:
        print(_version(args.verbose))
        return 0
    if args.command is None:
        top.print_usage(sys.stderr)
        return _fail("name a command (serve, demo, check, bench, health, setup, db, log) or --version")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
