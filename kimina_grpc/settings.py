"""Server settings, from `LEAN_SERVER_*` environment variables (and an optional `.env` file).

A bad value stops start-up with pydantic's message, which names the variable.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.I)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: Any) -> int:
    """'12G' -> bytes; a bare number is bytes."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"not a size like 12G or 512M: {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _default_max_queue_bytes() -> int:
    import psutil

    return max(256 << 20, psutil.virtual_memory().total // 8)


def _default_max_repls() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def discover_workspace() -> Path | None:
    """The seed's order: LEAN_SERVER_WORKSPACE (handled by the field), the current directory if it
    holds mathlib4/ or repl/, then ~/kimina-workspace, ~/lean-workspace, ~/workspace."""
    cwd = Path.cwd()
    if (cwd / "mathlib4").is_dir() or (cwd / "repl").is_dir():
        return cwd
    for name in ("kimina-workspace", "lean-workspace", "workspace"):
        candidate = Path.home() / name
        if (candidate / "repl").is_dir() or (candidate / "mathlib4").is_dir():
            return candidate
    return None


def _read_pem(path: Path, variable: str, kind: str, marker: bytes) -> None:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from None
    if marker not in text:
        raise ValueError(f"{variable}: {path} is not a PEM {kind} (no {marker.decode()} line)")


def _check_tls(cert: Path, key: Path, client_ca: Path | None) -> None:
    """Load the TLS files as the server will, so a wrong one is named at start-up rather than by gRPC
    core's log lines (or a misleading "port in use")."""
    _read_pem(cert, "LEAN_SERVER_TLS_CERT", "certificate", b"-----BEGIN CERTIFICATE-----")
    _read_pem(key, "LEAN_SERVER_TLS_KEY", "private key", b"PRIVATE KEY-----")
    try:  # an empty password: an encrypted key fails here instead of prompting on the terminal
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as exc:
        raise ValueError(
            f"LEAN_SERVER_TLS_CERT / LEAN_SERVER_TLS_KEY: {cert} and {key} are not a certificate and its "
            f"unencrypted key ({exc.reason or exc})"
        ) from None
    if client_ca is not None:
        _read_pem(client_ca, "LEAN_SERVER_TLS_CLIENT_CA", "certificate", b"-----BEGIN CERTIFICATE-----")
        try:
            ssl.create_default_context(cafile=client_ca)
        except ssl.SSLError as exc:
            raise ValueError(
                f"LEAN_SERVER_TLS_CLIENT_CA: {client_ca} holds no CA certificate ({exc.reason or exc})"
            ) from None


CONFIG_FILE = Path(os.environ.get("LEAN_SERVER_CONFIG_FILE", Path.home() / ".config" / "kimina-grpc" / "config.env"))
"""Written by `kimina-grpc setup --save-config`; a local .env and the environment override it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LEAN_SERVER_", env_file=(CONFIG_FILE, ".env"), extra="ignore", use_attribute_docstrings=True
    )
    # Each field's docstring is its description in docs/configuration.md (scripts/gen_config_docs.py);
    # `shown` is the default as the page prints it, where the value alone would not say it.

    # Listening and logging.
    host: str = "0.0.0.0"
    """Listen address."""
    port: int = Field(50051, ge=0, le=65535)
    """Listen port (`0` picks a free port)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """`DEBUG`, `INFO`, `WARNING`, `ERROR`."""
    environment: Literal["dev", "prod"] = "prod"
    """`prod`: JSON logs; `dev`: console logs."""
    lean_version: str = "v4.19.0"
    """Reported by `GetServerInfo`."""

    # Where Lean lives.
    workspace: Path | None = Field(None, json_schema_extra={"shown": "discovered"})
    """Where `repl/` and `mathlib4/` are. Discovered when unset: the current directory if it has
    `mathlib4/` or `repl/`, else `~/kimina-workspace`, `~/lean-workspace`, `~/workspace`."""
    project_dir: Path | None = Field(None, json_schema_extra={"shown": "<workspace>/mathlib4"})
    """The Lean project the REPL runs in (cwd; its .olean files are importable)."""
    repl_path: Path | None = Field(None, json_schema_extra={"shown": "<workspace>/repl/.lake/build/bin/repl"})
    """The REPL binary, run through `lake env`."""
    repl_command: str | None = None
    """A whole command line replacing `lake env <repl>` (shell-split; tests: the stand-in)."""

    # ExportAst.
    ast_export_bin: Path | None = Field(None, json_schema_extra={"shown": "lake exe ast-export"})
    """The exporter binary (default: `lake exe ast-export` in the AST project)."""
    ast_export_project_dir: Path | None = Field(None, json_schema_extra={"shown": "<workspace>/ast_export"})
    """The Lake project ast_export runs in (it resolves modules there)."""
    ast_export_command: str | None = None
    """A whole command line replacing the exporter (shell-split; tests: the stand-in)."""
    max_ast_jobs: int = Field(2, ge=1)
    """Exports at once."""

    # The pool.
    max_repls: int = Field(default_factory=_default_max_repls, ge=1, json_schema_extra={"shown": "CPUs − 1 (≥ 1)"})
    """REPL processes at most."""
    spare_repls: int = Field(0, ge=0)
    """Warm REPLs beyond `MAX_REPLS`, kept imported for the headers in use (most working REPLs first), that
    replace a REPL killed (timeout, memory), crashed or recycled at once instead of after an import; the
    spare's own successor imports in the background. Each costs its header's resident memory (5–8 GB for
    Mathlib) and no CPU, and counts toward the memory limits and pre-warming (with `INIT_REPLS` the server is
    ready once the spares of those headers are warm too); spares never run proofs beyond `MAX_REPLS`."""
    max_repl_uses: int = Field(500, ge=0)
    """Recycle a REPL after this many proofs (`0` = never; the REPL never frees environments, so a REPL
    never recycled eventually dies of memory on an unrelated proof)."""
    max_repl_uses_jitter: int | None = Field(None, ge=0, json_schema_extra={"shown": "MAX_REPL_USES / 10"})
    """Each REPL is recycled after `MAX_REPL_USES` less a random number of proofs in [0, this], drawn when it
    starts (gunicorn's `max_requests_jitter`): REPLs started together (pre-warm) are then recycled one at a
    time, not all at once, so the warm spares (`SPARE_REPLS`) keep up and the pool never has many REPLs
    importing together. A REPL lives `JITTER / 2` proofs less on average. `0`: every REPL after exactly
    `MAX_REPL_USES`. Below `MAX_REPL_USES`."""
    max_repl_mem: int | None = 12 << 30
    """Address-space cap per REPL (`RLIMIT_AS`, via util-linux `prlimit`), e.g. `12G`; `0` = none."""
    max_repl_rss: int | None = None
    """Resident-memory watchdog over the REPL's whole process tree, walked afresh every 0.25 s (so processes
    a proof starts count), e.g. `8G`: a proof past it is killed (`OUT_OF_MEMORY`); a REPL past it after a
    proof is recycled. Unset or `0`: off. Session REPLs are watched too: a tactic past it is `ERROR` (out of
    memory) and the REPL's other sessions move; a session REPL past 3/4 of it is recycled, its sessions
    moved ([sessions](sessions.md#memory))."""
    init_repls: dict[str, int] = Field(default_factory=dict, json_schema_extra={"shown": "{}"})
    """Pre-warm, JSON header → count, e.g. `{"import Mathlib": 3}`."""
    max_concurrent_imports: int = Field(2, ge=1)
    """Imports at once (they stall the disk)."""
    max_wait: float = Field(0, ge=0, json_schema_extra={"shown": "0 (no limit)"})
    """Seconds a proof may wait for a REPL before it is answered `NOT_CHECKED` (`0` = no limit but the
    caller's deadline)."""
    min_free_memory: int | None = None
    """Don't start a REPL while the machine has less available memory (e.g. `6G`); wait."""
    import_cost_hint: float = Field(15.0, gt=0)
    """Seconds an import is expected to take until one is measured (scheduling)."""

    # Requests.
    default_timeout: float = Field(60.0, gt=0)
    """Per-proof timeout default, in seconds."""
    default_trust: Literal["check", "audit", "judge"] = "check"
    """Trust level of proofs that set none: `check`, `audit`, `judge` (see [trust levels](trust.md) and the
    contract's `TrustLevel`; the last two need every proof to name its theorem: `theorem_name` or
    `statement`)."""
    max_timeout: float = Field(3600.0, gt=0)
    """Per-proof timeout bound, in seconds."""
    min_timeout: float = Field(0.1, ge=0)
    """The shortest check, in seconds: a smaller `timeout_seconds` is `INVALID_ARGUMENT` (a stream item:
    `NOT_CHECKED`); a proof whose caller's deadline leaves less is answered `NOT_CHECKED` without a REPL (a
    check cut shorter only kills a warm REPL, and its replacement pays the import; where imports are dear,
    as with Mathlib, raise it, e.g. to `1`)."""
    max_code_bytes: int = Field(1 << 20, gt=0)
    """Largest `code`."""
    max_batch: int = Field(10_000, gt=0)
    """Most proofs in one `Verify`."""
    max_queue: int = Field(100_000, gt=0)
    """Queued proofs at most; past it `RESOURCE_EXHAUSTED` with retry info."""
    max_queue_bytes: int = Field(
        default_factory=_default_max_queue_bytes,
        gt=0,
        json_schema_extra={"shown": "⅛ of the machine's memory (≥ 256M)"},
    )
    """Bytes of code queued at most over all callers (a count bound alone lets 1 MiB proofs fill the
    machine); past it `RESOURCE_EXHAUSTED` (a stream waits for room)."""
    stream_window: int = Field(64, gt=0)
    """Proofs per `StreamVerify` stream read and not yet answered (in flight, or results the client has not
    read)."""
    max_reply_bytes: int = Field(32 << 20, gt=0)
    """Largest REPL reply read (e.g. `32M`): a REPL writing more is stopped, its proof `REPL_ERROR` (not
    retried). Reading and parsing a reply counts against the proof's timeout."""
    max_reply_messages: int = Field(10_000, ge=2)
    """Messages (and sorries, and tactics) kept per reply; the rest counted in a note, the verdict
    unchanged."""
    max_decoding_bytes: int = Field(128 << 20, gt=0)
    """Bytes of large replies (over 128 KiB) parsed at once over the whole server; others wait, within their
    proof's timeout."""

    # Interactive proof sessions (ProofSession; docs/sessions.md).
    sessions_max: int = Field(256, ge=0)
    """`ProofSession`s open at most on this server (`0`: off, `ProofSession` is refused); past it
    `RESOURCE_EXHAUSTED`."""
    sessions_per_repl: int = Field(64, gt=0)
    """Sessions pinned to one REPL at most; past it `RESOURCE_EXHAUSTED`."""
    session_repls: int = Field(4, gt=0)
    """REPLs kept for sessions, apart from the pool's `LEAN_SERVER_MAX_REPLS`; past them
    `RESOURCE_EXHAUSTED`."""
    session_idle_seconds: float = Field(600.0, gt=0)
    """A session with nothing in flight that long ends `DEADLINE_EXCEEDED`."""
    session_max_states: int = Field(100_000, gt=0)
    """Proof states a session REPL records before its sessions move to a fresh one (memory)."""

    # Who may call, and how.
    api_key: str | None = None
    """The key itself, which callers send (`authorization: Bearer KEY` or `x-api-key`); prefer the file:
    the environment is easier to leak."""
    api_key_file: Path | None = None
    """File holding the key every RPC but health must carry (a mounted Secret: it stays out of the
    environment; surrounding whitespace is ignored)."""
    auth: Literal["on", "off"] = "on"
    """`on`: refuse to start without a key; `off`: serve without auth (a warning at start, in
    `GetServerInfo` and `kimina_auth_enabled 0`)."""
    tls_cert: Path | None = None
    """PEM certificate chain: the gRPC port speaks TLS (with `TLS_KEY`)."""
    tls_key: Path | None = None
    """PEM private key of `TLS_CERT` (unencrypted)."""
    tls_client_ca: Path | None = None
    """PEM CA: require client certificates it signed (mutual TLS)."""
    health_port: int | None = Field(None, ge=0, le=65535)
    """A plaintext port serving the health service only (for probes: Kubernetes' gRPC probes speak no TLS;
    `0` picks one); it reads requests of at most 64 KiB."""

    # The box around REPLs and exporters (kimina_grpc/repl/sandbox.py).
    sandbox: Literal["auto", "bwrap", "off"] = "auto"
    """`bwrap`: box every REPL and exporter with bubblewrap or refuse to start; `auto`: bubblewrap when it
    works (probed once at start), else serve with a loud warning; `off`: no box (warning too)."""
    sandbox_tmp_size: int = 512 << 20
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
    max_repl_file_size: int | None = 1 << 30
    """Largest file a REPL or exporter may write (`RLIMIT_FSIZE`; `0` = none)."""
    max_repl_procs: int | None = 4096
    """Processes and threads per REPL/exporter (`RLIMIT_NPROC`; `0` = none): set inside the box, so it
    counts per box (unboxed, the kernel counts it per user id); root is exempt (a root server's box runs
    as `LEAN_SERVER_SANDBOX_UID`, where it binds)."""

    # The result cache and in-flight dedupe (kimina_grpc/cache/).
    cache_enabled: bool = True
    """In-flight dedupe and the result cache (identical proofs share one check, and `VALID`, `INVALID`,
    `SORRY` and `UNTRUSTED` results are kept); `false`: every proof is checked."""
    cache_max_bytes: int | None = 256 << 20
    """Results kept in this server's memory (least recently used go first); `0` = none."""
    cache_max_entry_bytes: int | None = 1 << 20
    """A result larger than this (info trees, tactics) is not stored; `0` = no limit."""
    cache_url: str | None = None
    """`redis://host:port/db` (or `rediss://`, `unix://`): a cache shared by every replica (besides the
    memory one)."""
    cache_password_file: Path | None = None
    """File holding Redis's password (a mounted Secret; or give it in the URL,
    `redis://:PASSWORD@host`); masked in the box."""
    cache_allow_unboxed: bool = False
    """Accept a shared (Redis) cache with the sandbox off, where a proof can reach Redis and write any
    verdict for every replica (a warning in `GetServerInfo`); else the server refuses to start."""
    cache_ttl: float = Field(7 * 86400, gt=0)
    """Seconds a result stays in Redis."""
    cache_timeout: float = Field(0.1, gt=0)
    """Seconds a Redis request may take before the proof goes to Lean without it."""
    cache_retry_seconds: float = Field(2.0, gt=0)
    """After a Redis failure, Redis is skipped this long, then tried again."""

    # The proof log (kimina_grpc/prooflog/, docs/prooflog.md).
    database_url: str | None = Field(None, json_schema_extra={"shown": "unset (off)"})
    """The proof log: `postgresql://user@host:5432/db` or `sqlite:////abs/path.db` (SQLAlchemy's form:
    four slashes for an absolute path): every answered proof becomes a row there (unset = off, as in
    Kimina; [proof log](prooflog.md))."""
    database_password_file: Path | None = None
    """File holding the PostgreSQL password (a mounted Secret; or give it in the URL, which wins; never
    logged); masked in the box."""
    database_migrate: bool = False
    """Create or upgrade the log's tables at start (else `kimina-grpc db upgrade`)."""
    database_timeout: float = Field(5.0, gt=0)
    """Seconds to connect, and for one batch's write before its rows go to the spool."""
    database_retry_seconds: float = Field(2.0, gt=0)
    """After a failed write, batches go straight to the spool this long, then a write is tried again."""
    log_spool_dir: Path | None = Field(None, json_schema_extra={"shown": "~/.cache/kimina-grpc/prooflog-spool"})
    """Where rows wait while the database is away (written on the next start too)."""
    log_spool_max_bytes: int | None = 1 << 30
    """Spool bound (e.g. `1G`); rows past it are dropped and counted (`0` = none)."""
    log_batch_size: int = Field(500, gt=0)
    """Rows per write."""
    log_flush_seconds: float = Field(0.25, gt=0)
    """How long a row may wait for its batch to fill, in seconds."""
    log_max_pending: int = Field(100_000, gt=0)
    """Rows waiting in memory at most (behind a slow database and spool); more are dropped and counted."""
    log_retention_days: float | None = Field(None, ge=0, json_schema_extra={"shown": "unset (keep all)"})
    """Delete rows older than this many days (at start, then hourly; unset or `0` = keep them all)."""

    # gRPC.
    max_message_bytes: int = Field(64 << 20, gt=0)
    """gRPC send/receive limit (info trees are large); a result past its share is cut to fit, never the
    call failed ([replies](replies.md))."""
    keepalive_seconds: float = Field(60.0, gt=0)
    """HTTP/2 keepalive pings, in seconds."""
    max_connection_age: float = Field(0, ge=0, json_schema_extra={"shown": "0 (off)"})
    """Seconds before clients are asked to reconnect (spreads load over new pods: set it behind a headless
    Service so clients re-resolve); `0` = never."""
    drain_seconds: float = Field(5.0, ge=0)
    """Shutdown: how long running proofs may still run."""
    grace_seconds: float = Field(10.0, ge=0)
    """Shutdown: after the drain, how long answers may take to reach callers."""
    reflection: bool = True
    """gRPC server reflection."""
    metrics_port: int | None = Field(None, ge=0, le=65535, json_schema_extra={"shown": "unset (off)"})
    """Serve Prometheus metrics at `http://METRICS_HOST:PORT/metrics` (the image and manifests use `9090`;
    `0` = any free port); at most 64 connections at once (past that the oldest one that has sent no request
    is closed), each closed after 10 s."""
    metrics_host: str | None = Field(None, json_schema_extra={"shown": "LEAN_SERVER_HOST"})
    """Interface of the metrics endpoint; it has no auth: keep it off public addresses (on the pod network,
    or 127.0.0.1 behind a sidecar)."""

    @field_validator(
        "max_repl_mem",
        "max_repl_rss",
        "min_free_memory",
        "max_code_bytes",
        "max_queue_bytes",
        "max_message_bytes",
        "max_reply_bytes",
        "max_decoding_bytes",
        "sandbox_tmp_size",
        "max_repl_file_size",
        "cache_max_bytes",
        "cache_max_entry_bytes",
        "log_spool_max_bytes",
        mode="before",
    )
    @classmethod
    def _size(cls, value: Any) -> Any:
        """Sizes read like 12G; empty or 0 means none where none is allowed."""
        if value is None or value == "":
            return None
        return parse_size(value) or None

    @field_validator("max_repl_uses", mode="before")
    @classmethod
    def _kimina_no_limit(cls, value: Any) -> Any:
        """Kimina's "no limit" is -1 (ours is 0): a Kimina .env keeps working."""
        return 0 if str(value).strip() == "-1" else value

    @field_validator("max_repls", mode="before")
    @classmethod
    def _kimina_default_repls(cls, value: Any) -> Any:
        """Empty means the default, as in Kimina's .env (`LEAN_SERVER_MAX_REPLS=`)."""
        return _default_max_repls() if value == "" else value

    @field_validator("database_url", "log_retention_days", "max_repl_uses_jitter", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cache_url", mode="before")
    @classmethod
    def _cache_url(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("init_repls", mode="before")
    @classmethod
    def _init_repls(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if not isinstance(value, dict) or not all(isinstance(v, int) and v >= 0 for v in value.values()):
            raise ValueError('expected a JSON map of header to count, e.g. {"import Mathlib": 2}')
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.max_timeout < self.default_timeout:
            raise ValueError("LEAN_SERVER_DEFAULT_TIMEOUT must not exceed LEAN_SERVER_MAX_TIMEOUT")
        if self.default_timeout < self.min_timeout:
            raise ValueError("LEAN_SERVER_MIN_TIMEOUT must not exceed LEAN_SERVER_DEFAULT_TIMEOUT")
        if self.max_repl_uses and (self.max_repl_uses_jitter or 0) >= self.max_repl_uses:
            raise ValueError("LEAN_SERVER_MAX_REPL_USES_JITTER must be below LEAN_SERVER_MAX_REPL_USES")
        if self.repl_command is not None and not shlex.split(self.repl_command):
            raise ValueError("LEAN_SERVER_REPL_COMMAND is empty")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("LEAN_SERVER_TLS_CERT and LEAN_SERVER_TLS_KEY go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("LEAN_SERVER_TLS_CLIENT_CA needs LEAN_SERVER_TLS_CERT and LEAN_SERVER_TLS_KEY")
        if self.tls_cert is not None and self.tls_key is not None:
            _check_tls(self.tls_cert, self.tls_key, self.tls_client_ca)
        if self.cache_url is not None and not self.cache_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("LEAN_SERVER_CACHE_URL must be a redis://, rediss:// or unix:// URL")
        if self.cache_password_file is not None:
            self.cache_password()
        if self.database_url is not None:
            from kimina_grpc.prooflog.url import parse  # its message names the variable, never the password

            parse(self.database_url, self.database_password())
        return self

    def repl_uses_jitter(self) -> int:
        """MAX_REPL_USES_JITTER, or by default a tenth of MAX_REPL_USES."""
        return self.max_repl_uses // 10 if self.max_repl_uses_jitter is None else self.max_repl_uses_jitter

    def database_password(self) -> str | None:
        """The PostgreSQL password from DATABASE_PASSWORD_FILE (None without one); ValueError when unreadable."""
        if self.database_password_file is None:
            return None
        try:
            password = self.database_password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(
                f"LEAN_SERVER_DATABASE_PASSWORD_FILE: cannot read {self.database_password_file}: {exc.strerror or exc}"
            ) from None
        if not password:
            raise ValueError(f"LEAN_SERVER_DATABASE_PASSWORD_FILE: {self.database_password_file} is empty")
        return password

    def cache_password(self) -> str | None:
        """The Redis password from CACHE_PASSWORD_FILE (None without one); ValueError when unreadable."""
        if self.cache_password_file is None:
            return None
        try:
            password = self.cache_password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(
                f"LEAN_SERVER_CACHE_PASSWORD_FILE: cannot read {self.cache_password_file}: {exc}"
            ) from None
        if not password:
            raise ValueError(f"LEAN_SERVER_CACHE_PASSWORD_FILE: {self.cache_password_file} is empty")
        return password

    def resolved_api_key(self) -> str | None:
        """The key callers must send, or None with auth off. Raises ValueError when auth is on without
        a key, when both a key and a key file are set, or when auth is off but a key is set."""
        key = (self.api_key or "").strip()  # whitespace is no key (a stray `export KEY=" "`)
        if self.api_key_file is not None:
            if key:
                raise ValueError("set LEAN_SERVER_API_KEY or LEAN_SERVER_API_KEY_FILE, not both")
            try:
                key = self.api_key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"LEAN_SERVER_API_KEY_FILE: cannot read {self.api_key_file}: {exc}") from None
            if not key:
                raise ValueError(f"LEAN_SERVER_API_KEY_FILE: {self.api_key_file} is empty")
        if self.auth == "off":
            if key:
                raise ValueError("LEAN_SERVER_AUTH=off but an API key is set: remove one of them")
            return None
        if not key:
            raise ValueError(
                "no API key: set LEAN_SERVER_API_KEY_FILE (or LEAN_SERVER_API_KEY), "
                "or LEAN_SERVER_AUTH=off to serve without authentication"
            )
        return key

    def secret_paths(self) -> list[Path]:
        """Files a REPL must not read: the key file, the TLS key, the Redis password, the config file."""
        paths = (self.api_key_file, self.tls_key, self.cache_password_file, self.database_password_file, CONFIG_FILE)
        return [p for p in paths if p is not None]

    def resolved_workspace(self) -> Path | None:
        return self.workspace or discover_workspace()

    def ast_argv(self) -> tuple[tuple[str, ...], Path]:
        """The exporter's command line (module arguments follow) and its project directory."""
        workspace = self.resolved_workspace()
        project = self.ast_export_project_dir or (workspace / "ast_export" if workspace else None)
        if project is None:
            raise ValueError("no ast_export project: set LEAN_SERVER_AST_EXPORT_PROJECT_DIR or LEAN_SERVER_WORKSPACE")
        if self.ast_export_command:
            return tuple(shlex.split(self.ast_export_command)), project
        if self.ast_export_bin:
            return (str(self.ast_export_bin),), project
        return ("lake", "exe", "ast-export"), project

    def repl_argv(self) -> tuple[tuple[str, ...], str | None]:
        """The REPL's command line and working directory."""
        if self.repl_command:
            cwd = str(self.project_dir) if self.project_dir else None
            return tuple(shlex.split(self.repl_command)), cwd
        workspace = self.resolved_workspace()
        repl = self.repl_path or (workspace / "repl/.lake/build/bin/repl" if workspace else None)
        project = self.project_dir or (workspace / "mathlib4" if workspace else None)
        if repl is None or project is None:
            raise ValueError(
                "no Lean workspace found: set LEAN_SERVER_WORKSPACE (see tools/install_lean.sh), "
                "or LEAN_SERVER_REPL_COMMAND for the stand-in REPL"
            )
        return ("lake", "env", str(repl)), str(project)
