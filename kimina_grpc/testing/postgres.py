"""A throwaway PostgreSQL server for tests: `initdb` and `pg_ctl` from Debian's `postgresql` package,
run as an unprivileged user (PostgreSQL refuses root), listening on a free loopback port only, with
password (SCRAM) authentication and no durability (fsync off: nothing here outlives the test)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kimina_grpc.testing import free_port

USER = "kimina"
PASSWORD = "kimina-test-secret"


def bindir() -> Path:
    """Where initdb and pg_ctl are (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise FileNotFoundError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return Path(initdb).parent


@dataclass
class PostgresServer:
    base: Path
    port: int
    bin: Path
    password: str = PASSWORD

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, *argv: str) -> None:
        prefix: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            prefix = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
        subprocess.run(
            [*prefix, *argv], cwd=self.base, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120
        )

    def start(self) -> None:
        """Returns once the server takes connections."""
        self._as_owner(
            str(self.bin / "pg_ctl"), "-D", str(self.base / "data"), "-l", str(self.base / "log"), "-w", "start"
        )

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as when a database goes away."""
        self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.base / "data"), "-m", "fast", "-w", "stop")

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL (without the password)."""
        import psycopg

        with psycopg.connect(self.url(), password=self.password, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    base = Path(tempfile.mkdtemp(prefix="kimina-pg-"))
    server = PostgresServer(base, free_port(), bindir())
    pw = base / "pw"
    pw.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for path in (base, pw):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
    base.chmod(0o700)
    try:
        server._as_owner(
            str(server.bin / "initdb"),
            "-D",
            str(base / "data"),
            "-U",
            USER,
            "--auth=scram-sha-256",
            f"--pwfile={pw}",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        )
        with open(base / "data" / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {server.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\n"
                "max_connections = 40\n"
            )
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server._as_owner(str(server.bin / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)
