"""Where the server listens and how: gRPC's channel options, TLS credentials, and binding the API port
and the health-only port, each failure one line (BindError) naming what to change."""

from __future__ import annotations

import socket
from typing import Any

import grpc

from kimina_grpc.service.posture import BindError
from kimina_grpc.settings import Settings

_HEALTH_PORT_MAX_BYTES = 64 << 10
"""The health port's receive limit (a health request is a service name)."""


def grpc_options(settings: Settings) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.so_reuseport", 0),  # a second server must fail to bind, not share the port silently
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_seconds * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Without this, HTTP/2 windows let MiBs of a stream pile up before the reader's backpressure shows.
        ("grpc.http2.bdp_probe", 0),
    ]
    if settings.max_connection_age > 0:
        options.append(("grpc.max_connection_age_ms", int(settings.max_connection_age * 1000)))
        options.append(("grpc.max_connection_age_grace_ms", int(settings.grace_seconds * 1000)))
    return options


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def _in_use(host: str, port: int) -> bool:
    """Whether something already listens on host:port."""
    if port == 0:
        return False
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError:
        return False  # gRPC will say what is wrong with the address
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError:
            return True
    return False


def listen(server: grpc.aio.Server, settings: Settings) -> int:
    """Bind the API port (TLS when LEAN_SERVER_TLS_CERT is set); returns the port bound."""
    address = f"{settings.host}:{settings.port}"
    if _in_use(settings.host, settings.port):  # asked first: gRPC core logs its own multi-line failure
        raise BindError(f"cannot listen on {address}: the port is in use")
    credentials = _credentials(settings)
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises where it used to return 0
        port = 0
    if port == 0:
        raise BindError(f"cannot listen on {address}: the port is in use or the address is not this machine's")
    return port


def health_only_server(settings: Settings, port: int) -> tuple[grpc.aio.Server, int]:
    """A server for LEAN_SERVER_HEALTH_PORT, bound, its services still to add: health only, no auth,
    no TLS, what a kubelet's gRPC probe can speak. It tells nothing but SERVING or NOT_SERVING."""
    address = f"{settings.host}:{port}"
    if _in_use(settings.host, port):
        raise BindError(f"cannot listen on {address} (LEAN_SERVER_HEALTH_PORT): the port is in use")
    # A health request is a service name: nothing bigger is read on this unauthenticated port.
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", _HEALTH_PORT_MAX_BYTES)]
    )
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise BindError(f"cannot listen on {address} (LEAN_SERVER_HEALTH_PORT)")
    return server, bound
