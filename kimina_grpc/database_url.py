"""LEAN_SERVER_DATABASE_URL: which database, where, and how to name it without its password. Standard
library only, on the ground floor: the settings check the URL at start-up, the proof log opens it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

VARIABLE = "LEAN_SERVER_DATABASE_URL"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite:///"


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed database URL. `dsn` may hold the password: only `shown` is ever printed or logged."""

    backend: str
    """"postgresql" or "sqlite"."""
    dsn: str
    """libpq's URL (postgresql) or the file's path (sqlite)."""
    shown: str
    password: str | None = None


def redact(url: str) -> str:
    """The URL with its password (in the authority or a `password=` parameter) replaced by ***."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            netloc = parts.netloc.rsplit("@", 1)[1]
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc}")
        if "password" in parts.query.lower():
            query = [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query, True)]
            parts = parts._replace(query=urlencode(query, safe="*"))
        return urlunsplit(parts)
    except ValueError:
        return "(a URL that does not parse)"


def parse(url: str, password: str | None = None) -> Target:
    """`postgresql://user[:password]@host[:port]/db[?sslmode=...]` (a password in the URL wins over
    `password`), or `sqlite:///relative.db` / `sqlite:////absolute/path.db` (SQLAlchemy's form).
    ValueError, naming the variable, for anything else."""
    url = url.strip()
    if url.startswith(POSTGRES_SCHEMES):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (a port that is no number raises here)
        except ValueError as exc:
            raise ValueError(f"{VARIABLE}: {redact(url)} is not a valid postgresql:// URL ({exc})") from None
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError(f"{VARIABLE}: {redact(url)} names no host (postgresql://user@host:5432/db)")
        if not parts.path.strip("/"):
            raise ValueError(f"{VARIABLE}: {redact(url)} names no database (postgresql://user@host:5432/db)")
        in_url = parts.password is not None or "password=" in parts.query.lower()
        return Target("postgresql", url, redact(url), None if in_url else password)
    if url.startswith(SQLITE_SCHEME):
        path = url[len(SQLITE_SCHEME) :].split("?", 1)[0]
        if not path or path.endswith("/"):
            raise ValueError(f"{VARIABLE}: {url} names no file (sqlite:///log.db, sqlite:////abs/path/log.db)")
        return Target("sqlite", str(Path(path)), url)
    shown = redact(url)
    raise ValueError(f"{VARIABLE}: {shown!r} is neither postgresql://user@host/db nor sqlite:///path")
