"""From what a user gives (a target, TLS files) to a channel: gRPC's target and options (several
addresses balanced round_robin over the ready ones) and the TLS credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from kimina_grpc.client.reach import with_default_port


def http_hint(target: str) -> str:
    """The one line for a URL where a gRPC address belongs (a Kimina habit: http://host:8000)."""
    rest = target.split("://", 1)[1].split("/", 1)[0]
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    return (
        f"{target!r} is a URL; kimina-grpc speaks gRPC, not HTTP: give host:port of the gRPC server, "
        f"e.g. {host or 'localhost'}:50051"
    )


def channel_args(target: str) -> tuple[str, list[tuple[str, Any]]]:
    """Several comma-separated addresses become one ipv4/ipv6 target; more than one backend gets
    round_robin with health checks on the readiness service."""
    if "://" in target and not target.startswith("dns:"):
        raise ValueError(http_hint(target))
    addresses = [with_default_port(a.strip()) for a in target.split(",") if a.strip()]
    if len(addresses) == 1:
        target = addresses[0]  # `localhost` means localhost:50051, not gRPC's default port 443
    if len(addresses) > 1:
        target = "ipv4:" + ",".join(a.removeprefix("ipv4:") for a in addresses)
    # round_robin over the backends whose readiness health service says SERVING.
    config = (
        '{"loadBalancingConfig": [{"round_robin": {}}],'
        ' "healthCheckConfig": {"serviceName": "kimina_grpc.v1.VerifierService"}}'
    )
    opts: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.max_send_message_length", 64 << 20),
        # A server that was down for a moment is found again within a second or two, not after gRPC's
        # default reconnect backoff (up to 120 s), which would outlast the client's retries.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]
    if len(addresses) > 1 or target.startswith("dns:"):
        opts.append(("grpc.service_config", config))
    return target, opts


Pem = str | Path | bytes
"""A PEM file's path, or its bytes."""


def _pem(value: Pem | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def channel_credentials(
    ca: Pem | None = None, cert: Pem | None = None, key: Pem | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials: `ca` to trust (default: the system's roots), `cert`/`key` for mutual TLS."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs its key, and the other way round")
    return grpc.ssl_channel_credentials(root_certificates=_pem(ca), private_key=_pem(key), certificate_chain=_pem(cert))
