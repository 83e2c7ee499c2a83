"""What the server's parts share about how it is exposed, below all of them (the servicer, the
metrics and the server that wires them import it; it imports none of them)."""

from __future__ import annotations

from dataclasses import dataclass

from kimina_grpc.repl.proctree import MEMORY_ACCOUNTING


class BindError(RuntimeError):
    """The listen address cannot be bound (in use, or not this machine's); the message is one line."""


@dataclass(frozen=True, slots=True)
class Posture:
    """How exposed the server is, as GetServerInfo and the metrics report it."""

    sandbox: str = "off"
    auth_required: bool = False
    tls: bool = False
    tls_client_auth: bool = False
    warnings: tuple[str, ...] = ()
    memory_accounting: str = MEMORY_ACCOUNTING
