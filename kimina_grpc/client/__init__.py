"""The Python client: `KiminaClient` (blocking) and `AsyncKiminaClient`, typed results.

Installable without the server's dependencies (`pip install kimina_grpc`).
"""

from kimina_grpc.client._async import AsyncKiminaClient
from kimina_grpc.client._sync import KiminaClient
from kimina_grpc.client._types import (
    AstResult,
    Diagnostics,
    InvalidArgument,
    KiminaError,
    Message,
    Proof,
    Result,
    Sorry,
    Unauthenticated,
)
from kimina_grpc.verdict import Verdict

__all__ = [
    "AstResult",
    "AsyncKiminaClient",
    "Diagnostics",
    "InvalidArgument",
    "KiminaClient",
    "KiminaError",
    "Message",
    "Proof",
    "Result",
    "Sorry",
    "Unauthenticated",
    "Verdict",
]
