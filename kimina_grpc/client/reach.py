"""Addresses as users type them, and one quick look for a server before a command starts its work.

gRPC dials port 443 for an address without a port and, when nothing listens, answers after its
retries with "UNAVAILABLE: failed to connect to all addresses; last error: ...": `check` took 6 s and
`bench` 13 s to say so. The commands instead try one TCP connection with a short deadline first.
"""

from __future__ import annotations

import os
import socket

DEFAULT_PORT = 50051
CONNECT_SECONDS = 2.0
START_HINT = "start one with `kimina-grpc serve` or `kimina-grpc demo`"
_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")
"""gRPC's own name syntaxes: passed on as written."""
_PROXIES = ("grpc_proxy", "https_proxy", "http_proxy", "GRPC_PROXY", "HTTPS_PROXY", "HTTP_PROXY")


def with_default_port(address: str) -> str:
    """`address` with the server's default port when it names none (`localhost` -> `localhost:50051`;
    gRPC's own default would be 443)."""
    if address.startswith(_SCHEMES) or "://" in address:
        return address
    if address.startswith("["):  # [v6] or [v6]:port
        return address if "]:" in address else f"{address}:{DEFAULT_PORT}"
    colons = address.count(":")
    if colons == 0:
        return f"{address}:{DEFAULT_PORT}"
    if colons > 1:  # a bare IPv6 address
        return f"[{address}]:{DEFAULT_PORT}"
    return address


def _host_port(address: str) -> tuple[str, int] | None:
    address = with_default_port(address)
    if address.startswith(_SCHEMES) or "://" in address:
        return None
    host, _, port = address.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None


def _why(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_SECONDS:g} s"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    return exc.strerror or str(exc)


def unreachable(target: str, timeout: float = CONNECT_SECONDS) -> str | None:
    """One line when no address of `target` accepts a TCP connection within `timeout`, else None
    (also for gRPC's own name syntaxes and behind a proxy, which are left to gRPC)."""
    if any(os.environ.get(v) for v in _PROXIES):
        return None  # gRPC goes through the proxy, where a direct connection proves nothing
    failures = []
    for address in (a.strip() for a in target.split(",") if a.strip()):
        where = _host_port(address)
        if where is None:
            return None
        try:
            socket.create_connection(where, timeout=timeout).close()
        except OSError as exc:
            failures.append(_why(exc))
        else:
            return None
    if not failures:
        return None
    return f"no server at {target} ({'; '.join(dict.fromkeys(failures))}): {START_HINT}"
