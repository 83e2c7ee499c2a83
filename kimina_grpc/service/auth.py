"""The API key (LEAN_SERVER_AUTH): every RPC but health checks must carry it."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

_HEALTH_PREFIX = "/grpc.health.v1.Health/"


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires the API key on every RPC but health checks (probes send no metadata)."""

    def __init__(self, api_key: str) -> None:
        self._key = api_key.encode()

    def _authorised(self, metadata: tuple[tuple[str, str | bytes], ...]) -> bool:
        # Only the two names that can carry the key are read: other entries, `-bin` ones (arbitrary
        # bytes) above all, are none of auth's business.
        for key, value in metadata:
            if not isinstance(value, str):
                continue
            if key == "authorization" and value.startswith("Bearer "):
                text = value[len("Bearer ") :]
            elif key == "x-api-key":
                text = value
            else:
                continue
            if hmac.compare_digest(text.encode(), self._key):
                return True
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if details.method.startswith(_HEALTH_PREFIX) or self._authorised(tuple(details.invocation_metadata or ())):
            return await continuation(details)
        handler = await continuation(details)
        if handler is None:
            return handler

        async def deny(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong API key")

        # A request-streaming handler whatever the method: gRPC reads a unary request whole (up to
        # the receive limit, 64 MiB) before its handler runs; a stream's messages only when the
        # handler asks, and this one never does. An unauthenticated call costs a flow-control window.
        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        return grpc.stream_unary_rpc_method_handler(deny)
