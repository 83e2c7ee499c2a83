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
    model_config = SettingsConfigDict(env_prefix="LEAN_SERVER_", env_file=(CONFIG_FILE, ".env"), extra="ignore")

    host: str = "0.0.0.0"
    port: int = Field(50051, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    environment: Literal["dev", "prod"] = "prod"
    """dev: console logs; prod: JSON logs."""
    lean_version: str = "v4.19.0"

    # Where Lean lives.
    workspace: Path | None = None
    project_dir: Path | None = None
    """The Lean project the REPL runs in (cwd; its .olean files are importable). Default: <workspace>/mathlib4."""
    repl_path: Path | None = None
    """The REPL binary. Default: <workspace>/repl/.lake/build/bin/repl, run through `lake env`."""
    repl_command: str | None = None
    """A whole command line replacing `lake env <repl_path>` (shell-split); tests use the stand-in."""

    # ExportAst.
    ast_export_bin: Path | None = None
    """The ast_export binary; default: `lake exe ast-export` in the AST project."""
    ast_export_project_dir: Path | None = None
    """The Lake project ast_export runs in (it resolves modules there). Default: <workspace>/ast_export."""
    ast_export_command: str | None = None
    """A whole command line replacing the exporter (shell-split); tests use the stand-in."""
    max_ast_jobs: int = Field(2, ge=1)

    # The pool.
    max_repls: int = Field(default_factory=_default_max_repls, ge=1)
    spare_repls: int = Field(0, ge=0)
    """Warm REPLs beyond MAX_REPLS, kept imported for the headers in use, that replace a killed,
    crashed or recycled REPL at once (no import waited on). Each costs its header's memory (a
    Mathlib REPL: about 5-8 GB resident) and no CPU; they never run proofs beyond MAX_REPLS."""
    max_repl_uses: int = Field(500, ge=0)
    """Recycle a REPL after this many proofs (0 = never). The REPL keeps every command's environment
    and info trees for good: a REPL that is never recycled eventually dies of memory on some
    unrelated proof."""
    max_repl_mem: int | None = 12 << 30
    """Address-space cap per REPL (RLIMIT_AS), e.g. 12G; 0 = none."""
    max_repl_rss: int | None = None
    """Resident-memory watchdog per REPL: killed during a proof (OUT_OF_MEMORY) or recycled after one
    above it; e.g. 8G; unset/0 = off."""
    init_repls: dict[str, int] = Field(default_factory=dict)
    """Pre-warm: JSON map header -> count, e.g. {"import Mathlib": 3}."""
    max_concurrent_imports: int = Field(2, ge=1)
    max_wait: float = Field(0, ge=0)
    """Seconds a proof may wait for a REPL (0 = no limit but the caller's deadline)."""
    min_free_memory: int | None = None
    """Don't start a REPL while the machine's available memory is below this (e.g. 6G)."""
    import_cost_hint: float = Field(15.0, gt=0)
    """Seconds an import is expected to take, until one has been measured (scheduling)."""

    # Requests.
    default_timeout: float = Field(60.0, gt=0)
    default_trust: Literal["check", "audit", "judge"] = "check"
    """The trust level of proofs that set none (see the contract's TrustLevel); audit and judge
    need every proof to name its theorem (theorem_name or statement)."""
    max_timeout: float = Field(3600.0, gt=0)
    min_timeout: float = Field(0.1, ge=0)
    """The shortest check: a timeout below it is refused, and a proof whose caller's deadline leaves
    less is answered NOT_CHECKED without a REPL (a check cut that short only kills a warm REPL,
    and its replacement pays the import)."""
    max_code_bytes: int = Field(1 << 20, gt=0)
    max_batch: int = Field(10_000, gt=0)
    max_queue: int = Field(100_000, gt=0)
    max_queue_bytes: int = Field(default_factory=_default_max_queue_bytes, gt=0)
    """Bytes of code queued at most, over all callers (a count bound alone lets 1 MiB proofs fill
    the machine). Default: an eighth of the machine's memory, at least 256 MiB."""
    stream_window: int = Field(64, gt=0)
    max_reply_bytes: int = Field(32 << 20, gt=0)
    """The largest REPL reply read (e.g. 32M): a REPL writing more is stopped and its proof answered
    REPL_ERROR. Reading and parsing a reply counts against the proof's timeout."""
    max_reply_messages: int = Field(10_000, ge=2)
    """Messages (and sorries, and tactics) kept per reply; the rest are counted in a note."""
    max_decoding_bytes: int = Field(128 << 20, gt=0)
    """Bytes of large replies parsed at once over the whole server; others wait (within their timeout)."""

    # Interactive proof sessions (ProofSession; docs/sessions.md).
    sessions_max: int = Field(256, ge=0)
    """Sessions open at most on this server (0: ProofSession is refused)."""
    sessions_per_repl: int = Field(64, gt=0)
    """Sessions pinned to one REPL at most."""
    session_repls: int = Field(4, gt=0)
    """REPLs kept for sessions, apart from the pool's LEAN_SERVER_MAX_REPLS."""
    session_idle_seconds: float = Field(600.0, gt=0)
    """A session with no request in flight for this long is closed (DEADLINE_EXCEEDED)."""
    session_max_states: int = Field(100_000, gt=0)
    """Proof states a session REPL records before its sessions move to a fresh one (memory)."""

    # Who may call, and how.
    api_key: str | None = None
    """The key callers send (`authorization: Bearer KEY` or `x-api-key`); prefer API_KEY_FILE."""
    api_key_file: Path | None = None
    """A file holding the key (a mounted Kubernetes Secret): it stays out of the environment."""
    auth: Literal["on", "off"] = "on"
    """`off` serves without a key (said at start and in GetServerInfo); `on` refuses to start without one."""
    tls_cert: Path | None = None
    """PEM certificate chain: serve TLS (with TLS_KEY)."""
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    """PEM CA bundle: require client certificates signed by it (mutual TLS)."""
    health_port: int | None = Field(None, ge=0, le=65535)
    """A second, plaintext port serving the health service only (Kubernetes' gRPC probes speak no TLS)."""

    # The box around REPLs and exporters (kimina_grpc/repl/sandbox.py).
    sandbox: Literal["auto", "bwrap", "off"] = "auto"
    """bwrap: bubblewrap or refuse to start; auto: bubblewrap when it works, else a loud warning."""
    sandbox_tmp_size: int = 512 << 20
    """Size of each box's private /tmp (e.g. 512M)."""
    sandbox_hide: str = ""
    """More paths to mask in the box, colon-separated (secrets the server knows of are masked already)."""
    sandbox_uid: int = Field(65534, ge=0, lt=1 << 32)
    """Host uid (and gid) a box runs as when the server is root (65534: nobody); 0 keeps root's."""
    repl_env_allow: str = ""
    """More environment variable names (or NAME_* patterns) passed to REPLs, comma-separated."""
    max_repl_file_size: int | None = 1 << 30
    """RLIMIT_FSIZE per REPL/exporter (0 = none)."""
    max_repl_procs: int | None = 4096
    """RLIMIT_NPROC per REPL/exporter; the kernel counts it per user id (0 = none; root is exempt)."""

    # The result cache and in-flight dedupe (kimina_grpc/cache/).
    cache_enabled: bool = True
    """Identical proofs share one check, and VALID/INVALID/SORRY results are kept (false: off)."""
    cache_max_bytes: int | None = 256 << 20
    """Bytes of results kept in this server's memory (least recently used go first); 0 = none."""
    cache_max_entry_bytes: int | None = 1 << 20
    """Results larger than this (info trees, tactics) are not stored; 0 = no limit."""
    cache_url: str | None = None
    """redis://host:port/db (or rediss://): a cache shared by every replica, besides the memory one."""
    cache_password_file: Path | None = None
    """A file holding the Redis password (a mounted Secret; or put it in the URL, redis://:PASSWORD@host)."""
    cache_allow_unboxed: bool = False
    """Use CACHE_URL with the sandbox off: a proof can then reach Redis and write any verdict for every
    replica. Refused unless this is true (and then said in GetServerInfo's security warnings)."""
    cache_ttl: float = Field(7 * 86400, gt=0)
    """Seconds a result stays in Redis."""
    cache_timeout: float = Field(0.1, gt=0)
    """Seconds a Redis request may take before the proof goes to Lean without it."""
    cache_retry_seconds: float = Field(2.0, gt=0)
    """After a Redis failure, seconds during which Redis is skipped before it is tried again."""

    # The proof log (kimina_grpc/prooflog/, docs/prooflog.md).
    database_url: str | None = None
    """postgresql://user@host:5432/db or sqlite:///path.db (SQLAlchemy's form: four slashes for an absolute
    path): every answered proof becomes a row there (unset = off, as in Kimina)."""
    database_password_file: Path | None = None
    """A file holding the PostgreSQL password (a mounted Secret); a password in the URL wins."""
    database_migrate: bool = False
    """Create or upgrade the log's schema at start (else `kimina-grpc db upgrade` does it)."""
    database_timeout: float = Field(5.0, gt=0)
    """Seconds to connect, and for one batch's write, before its rows go to the spool."""
    database_retry_seconds: float = Field(2.0, gt=0)
    """After a failed write, seconds during which batches go straight to the spool."""
    log_spool_dir: Path | None = None
    """Where rows wait while the database is away (default ~/.cache/kimina-grpc/prooflog-spool)."""
    log_spool_max_bytes: int | None = 1 << 30
    """Bytes the spool may hold (e.g. 1G); rows past it are dropped and counted. 0 = no limit."""
    log_batch_size: int = Field(500, gt=0)
    log_flush_seconds: float = Field(0.25, gt=0)
    """Seconds a row may wait for its batch to fill."""
    log_max_pending: int = Field(100_000, gt=0)
    """Rows waiting in memory at most (behind a slow database and spool); more are dropped and counted."""
    log_retention_days: float | None = Field(None, ge=0)
    """Delete rows older than this many days (unset or 0 = keep them all)."""

    # gRPC.
    max_message_bytes: int = Field(64 << 20, gt=0)
    keepalive_seconds: float = Field(60.0, gt=0)
    max_connection_age: float = Field(0, ge=0)
    """Seconds before the server asks a client to reconnect (0 = never); set it behind a headless
    Service so clients re-resolve and spread over new pods."""
    drain_seconds: float = Field(5.0, ge=0)
    grace_seconds: float = Field(10.0, ge=0)
    reflection: bool = True
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Serve Prometheus metrics at http://METRICS_HOST:PORT/metrics (unset = off; 0 = any free port)."""
    metrics_host: str | None = None
    """Interface of the metrics endpoint (unset = LEAN_SERVER_HOST). It has no auth: keep it on the pod
    network (or 127.0.0.1 behind a sidecar), never on a public address."""

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

    @field_validator("database_url", "log_retention_days", mode="before")
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
