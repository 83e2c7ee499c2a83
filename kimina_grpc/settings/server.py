"""How the server listens and logs, and how it speaks gRPC (kimina_grpc/service/app.py, ports.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kimina_grpc.settings.base import Group, Size


class ListenSettings(Group):
    """Listening and logging."""

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


class GrpcSettings(Group):
    """gRPC."""

    max_message_bytes: Size = Field(64 << 20, gt=0)
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
