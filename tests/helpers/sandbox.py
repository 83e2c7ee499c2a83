"""A server as the box's tests run it: with an API key, a client that tries once, and a proof made
of the stand-in's attack directives."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from kimina_grpc.client import AsyncKiminaClient
from kimina_grpc.service.server import App, create_app

from .processes import none_left
from .server import settings

KEY = "k-" + uuid.uuid4().hex


@contextlib.asynccontextmanager
async def app_with(**kw: Any) -> AsyncIterator[tuple[App, AsyncKiminaClient]]:
    app = create_app(settings(**kw))
    await app.start()
    client = AsyncKiminaClient(f"127.0.0.1:{app.port}", kw.get("api_key") or KEY, max_attempts=1)
    try:
        yield app, client
    finally:
        await client.close()
        await app.stop()
        await none_left()


def proof(*directives: str, header: str = "") -> str:
    body = "".join(f"  -- fake: {d}\n" for d in directives)
    return f"{header}\ntheorem t : True := by\n{body}  trivial\n"
