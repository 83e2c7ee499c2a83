"""Who may call, and how: the API key, TLS (and mutual TLS), and the plaintext health port."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from kimina_grpc.settings.base import Group, read_secret


def _read_pem(path: Path, variable: str, kind: str, marker: bytes) -> None:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from None
    if marker not in text:
        raise ValueError(f"{variable}: {path} is not a PEM {kind} (no {marker.decode()} line)")


def _check_tls_files(cert: Path, key: Path, client_ca: Path | None) -> None:
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


class AccessSettings(Group):
    """Who may call, and how."""

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

    @model_validator(mode="after")
    def _check_tls(self) -> AccessSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("LEAN_SERVER_TLS_CERT and LEAN_SERVER_TLS_KEY go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("LEAN_SERVER_TLS_CLIENT_CA needs LEAN_SERVER_TLS_CERT and LEAN_SERVER_TLS_KEY")
        if self.tls_cert is not None and self.tls_key is not None:
            _check_tls_files(self.tls_cert, self.tls_key, self.tls_client_ca)
        return self

    def resolved_api_key(self) -> str | None:
        """The key callers must send, or None with auth off. Raises ValueError when auth is on without
        a key, when both a key and a key file are set, or when auth is off but a key is set."""
        key = (self.api_key or "").strip()  # whitespace is no key (a stray `export KEY=" "`)
        if self.api_key_file is not None:
            if key:
                raise ValueError("set LEAN_SERVER_API_KEY or LEAN_SERVER_API_KEY_FILE, not both")
            key = read_secret(self.api_key_file, "API_KEY_FILE")
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
