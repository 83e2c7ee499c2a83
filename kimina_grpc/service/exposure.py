"""How exposed the server will be, decided from the settings before anything starts: the REPLs' box
(LEAN_SERVER_SANDBOX), a set-up refused as unsafe, and the posture with its warnings."""

from __future__ import annotations

import contextlib
import os
import shutil

from kimina_grpc.repl import sandbox
from kimina_grpc.repl.sandbox import Resolved
from kimina_grpc.service.posture import Posture
from kimina_grpc.settings import Settings


def resolve_box(settings: Settings) -> Resolved:
    """The sandbox for LEAN_SERVER_SANDBOX (bubblewrap is probed once, here)."""
    extra = [p for p in settings.sandbox_hide.split(":") if p]
    allow = tuple(n.strip() for n in settings.repl_env_allow.replace(",", " ").split())
    return sandbox.resolve(
        settings.sandbox,
        tmp_bytes=settings.sandbox_tmp_size,
        hide=sandbox.default_hide([*settings.secret_paths(), *extra]),
        env_allow=(*sandbox.DEFAULT_ENV_ALLOW, *allow),
        uid=settings.sandbox_uid,
        needs=_boxed_paths(settings),
    )


def _boxed_paths(settings: Settings) -> list[str]:
    """What the boxed commands read: their programs, absolute arguments and working directories."""
    commands = []
    with contextlib.suppress(ValueError):
        commands.append(settings.repl_argv())
    with contextlib.suppress(ValueError):
        argv, project = settings.ast_argv()
        commands.append((argv, str(project)))
    paths = []
    for argv, cwd in commands:
        program = shutil.which(argv[0]) if argv else None
        paths += [p for p in (program, cwd, *argv[1:]) if p and os.path.isabs(p)]
    return paths


def unboxed_shared_cache(settings: Settings, resolved: Resolved) -> bool:
    return bool(settings.cache_url and settings.cache_enabled and not resolved.box.enabled)


def posture(settings: Settings, resolved: Resolved, api_key: str | None) -> Posture:
    """What GetServerInfo and the metrics report, and the warnings logged at start."""
    warnings = [resolved.warning] if resolved.warning else []
    if unboxed_shared_cache(settings, resolved):
        warnings.append(
            "shared cache with the sandbox off (LEAN_SERVER_CACHE_ALLOW_UNBOXED): a proof can reach Redis "
            "and write any verdict for every replica"
        )
    if settings.database_url and not resolved.box.enabled:
        warnings.append(
            "proof log with the sandbox off: a proof can reach the database (its password, its file) and write rows "
            "(LEAN_SERVER_DATABASE_URL, docs/prooflog.md)"
        )
    if api_key is None:
        warnings.append("authentication off (LEAN_SERVER_AUTH=off): anyone who reaches the port may call")
    return Posture(
        sandbox=resolved.box.name,
        auth_required=api_key is not None,
        tls=settings.tls_cert is not None,
        tls_client_auth=settings.tls_client_ca is not None,
        warnings=tuple(warnings),
    )


def refuse_unsafe(settings: Settings, resolved: Resolved) -> None:
    """SandboxUnavailable when a shared cache would be reachable from unboxed proofs, unless accepted."""
    if unboxed_shared_cache(settings, resolved) and not settings.cache_allow_unboxed:
        raise sandbox.SandboxUnavailable(
            "LEAN_SERVER_CACHE_URL with the sandbox off: a proof could reach Redis and write any verdict "
            "for every replica; box the REPLs (LEAN_SERVER_SANDBOX=bwrap), or set "
            "LEAN_SERVER_CACHE_ALLOW_UNBOXED=true to accept it"
        )
