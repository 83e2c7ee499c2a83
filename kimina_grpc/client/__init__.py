"""The Python client: `KiminaClient` (blocking) and `AsyncKiminaClient`, typed results.

Installable without the server's dependencies (`pip install kimina_grpc`).
"""

from kimina_grpc.client._async import AsyncKiminaClient
from kimina_grpc.client._backends import BackendStats, ClusterOptions
from kimina_grpc.client._errors import InvalidArgument, KiminaError, Unauthenticated
from kimina_grpc.client._info import CacheState, HeaderState, PoolCounters, ProofLogState, ServerInfo
from kimina_grpc.client._kimina_results import Infotree, SnippetAnalysis, SnippetStatus
from kimina_grpc.client._process import ForkedProcessError
from kimina_grpc.client._rows import results_to_dataset, results_to_rows
from kimina_grpc.client._session import AsyncSession, Finished, Goal, Session, Step
from kimina_grpc.client._sync import KiminaClient
from kimina_grpc.client._types import AstResult, CheckResponse, Diagnostics, Message, Proof, Result, Snippet, Sorry
from kimina_grpc.verdict import Verdict

__all__ = [
    "AstResult",
    "AsyncKiminaClient",
    "AsyncSession",
    "BackendStats",
    "CacheState",
    "CheckResponse",
    "ClusterOptions",
    "Diagnostics",
    "Finished",
    "ForkedProcessError",
    "Goal",
    "HeaderState",
    "Infotree",
    "InvalidArgument",
    "KiminaClient",
    "KiminaError",
    "Message",
    "PoolCounters",
    "Proof",
    "ProofLogState",
    "Result",
    "ServerInfo",
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
