"""The box around REPLs and exporters (kimina_grpc/repl/sandbox.py): bubblewrap or not, what the box
hides and lets through, and the process limits inside it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kimina_grpc.settings.base import Group, OptionalSize, Size


class BoxSettings(Group):
    """The box around REPLs and exporters (kimina_grpc/repl/sandbox.py)."""

    sandbox: Literal["auto", "bwrap", "off"] = "auto"
    """`bwrap`: box every REPL and exporter with bubblewrap or refuse to start; `auto`: bubblewrap when it
    works (probed once at start), else serve with a loud warning; `off`: no box (warning too)."""
    sandbox_tmp_size: Size = 512 << 20
    """Size of each box's private `/tmp` (e.g. `512M`)."""
    sandbox_hide: str = ""
    """More paths to mask in the box, `:`-separated (secrets the server knows of are masked already)."""
    sandbox_uid: int = Field(65534, ge=0, lt=1 << 32, json_schema_extra={"shown": "65534 (nobody)"})
    """Host uid (and gid) a box runs as when the server is root; `0` keeps root's (a security warning: a
    proof reads root-only files). What the box runs must be readable by it, else the box runs as root (with
    the warning)."""
    repl_env_allow: str = ""
    """More environment variables (names or `NAME_*`, comma-separated) a REPL may see; `LEAN_SERVER_*`
    never."""
    max_repl_file_size: OptionalSize = 1 << 30
    """Largest file a REPL or exporter may write (`RLIMIT_FSIZE`; `0` = none)."""
    max_repl_procs: int | None = 4096
    """Processes and threads per REPL/exporter (`RLIMIT_NPROC`; `0` = none): set inside the box, so it
    counts per box (unboxed, the kernel counts it per user id); root is exempt (a root server's box runs
    as `LEAN_SERVER_SANDBOX_UID`, where it binds)."""
