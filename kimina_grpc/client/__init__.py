"""The Python client: `KiminaClient` (blocking) and `AsyncKiminaClient`, typed results.

Installable without the server's dependencies (`pip install kimina_grpc`).
"""

from kimina_grpc.client._async import AsyncKiminaClient
from kimina_grpc.client._kimina import Infotree, SnippetAnalysis, SnippetStatus
from kimina_grpc.client._session import AsyncSession, Finished, Goal, Session, Step
from kimina_grpc.client._sync import KiminaClient
from kimina_grpc.client._types import (
    AstResult,
    CheckResponse,
    Diagnostics,
    InvalidArgument,
    KiminaError,
    Message,
    Proof,
    Result,
    Snippet,
    Sorry,
    Unauthenticated,
    results_to_dataset,
    results_to_rows,
)
from kimina_grpc.verdict import Verdict

__all__ = [
    "AstResult",
    "AsyncKiminaClient",
    "AsyncSession",
    "CheckResponse",
    "Diagnostics",
    "Finished",
    "Goal",
    "Infotree",
    "InvalidArgument",
    "KiminaClient",
    "KiminaError",
    "Message",
    "Proof",
    "Result",
    "Session",
    "Snippet",
    "SnippetAnalysis",
    "SnippetStatus",
    "Sorry",
    "Step",
    "Unauthenticated",
    "Verdict",
    "results_to_dataset",
    "results_to_rows",
]
