"""KiminaClient: the async client run on a private event loop thread, so there is one implementation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, TypeVar

from kimina_grpc.client._async import READINESS, AsyncKiminaClient, Blocking
from kimina_grpc.client._kimina import run_benchmark
from kimina_grpc.client._session import AsyncSession, Session
from kimina_grpc.client._types import AstResult, CheckResponse, Proofs, Result
from kimina_grpc.v1 import verifier_pb2 as pb

T = TypeVar("T")


class KiminaClient:
    """Blocking client; same methods and arguments as AsyncKiminaClient."""

    def __init__(self, target: str | None = None, api_key: str | None = None, *args: Any, **kw: Any) -> None:
        """`target` is host:port (default localhost:50051); then kimina-client's `headers`,
        `http_timeout`, `n_retries` and `api_url` (its name for the target); see AsyncKiminaClient."""
        self.target = target or kw.get("api_url") or "localhost:50051"
        self.api_key = api_key
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kimina-client", daemon=True)
        self._thread.start()
        try:
            self._client: AsyncKiminaClient = self._run(_make(target, api_key, args, kw))
        except BaseException:
            self._stop_loop()
            raise
        self._blocking = Blocking(self._client, self._loop)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> KiminaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.close())
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def verify(self, proofs: Proofs, **kw: Any) -> list[Result]:
        return self._run(self._client.verify(proofs, **kw))

    def verify_stream(self, proofs: Proofs, **kw: Any) -> Iterator[Result]:
        return self._blocking.verify_stream(proofs, **kw)

    def check(self, snips: Proofs, timeout: float = 60, *args: Any, **kw: Any) -> CheckResponse:
        """Kimina's `check`, its arguments in its order (see AsyncKiminaClient.check)."""
        return self._run(self._client.check(snips, timeout, *args, **kw))

    def api_check(self, snippets: Proofs, *args: Any, **kw: Any) -> CheckResponse:
        """Kimina's one-batch check (see AsyncKiminaClient.api_check)."""
        return self._run(self._client.api_check(snippets, *args, **kw))

    def test(self) -> None:
        """Kimina's smoke test (see AsyncKiminaClient.test)."""
        self._run(self._client.test())

    def run_benchmark(self, *args: Any, **kw: Any) -> dict[str, Any]:
        """Kimina's `run_benchmark(dataset_name, split, n, batch_size, max_workers, timeout, reuse,
        show_progress)`, plus `output`; see _kimina.run_benchmark."""
        return run_benchmark(self, *args, **kw)

    def export_ast(self, modules: Iterable[str] | None = None, **kw: Any) -> list[AstResult]:
        return self._run(self._client.export_ast(modules, **kw))

    def health(self, service: str = READINESS) -> bool:
        return self._run(self._client.health(service))

    def health_status(self, service: str = READINESS) -> str:
        return self._run(self._client.health_status(service))

    def session(self, code: str, **kw: Any) -> Session:
        """`with client.session(code) as s:` (see AsyncKiminaClient.session)."""
        return Session(self._run(_session(self._client, code, kw)), self._loop)

    def server_info(self) -> pb.GetServerInfoResponse:
        return self._run(self._client.server_info())


async def _make(
    target: str | None, api_key: str | None, args: tuple[Any, ...], kw: dict[str, Any]
) -> AsyncKiminaClient:
    return AsyncKiminaClient(target, api_key, *args, **kw)  # the channel must be made on the loop that uses it


async def _session(client: AsyncKiminaClient, code: str, kw: dict[str, Any]) -> AsyncSession:
    return client.session(code, **kw)  # its queues belong to the client's loop
