"""KiminaClient: the async client run on a private event loop thread, so there is one implementation.

Each process has its own: in a process forked from one that used gRPC (a reward scored in the
parent, then in a fork pool's worker) the calls run in a fresh helper process instead (_remote.py),
and the parent's loop thread and channels are never touched (see _process.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from kimina_grpc.client._async import READINESS, AsyncKiminaClient, Blocking
from kimina_grpc.client._backends import BackendStats
from kimina_grpc.client._info import ServerInfo
from kimina_grpc.client._kimina import run_benchmark
from kimina_grpc.client._process import ForkedProcessError, PerProcess, grpc_usable
from kimina_grpc.client._remote import Remote
from kimina_grpc.client._rows import Proofs
from kimina_grpc.client._session import AsyncSession, Session
from kimina_grpc.client._types import AstResult, CheckResponse, Result

T = TypeVar("T")


class KiminaClient:
    """Blocking client; same methods and arguments as AsyncKiminaClient."""

    def __init__(self, target: str | None = None, api_key: str | None = None, *args: Any, **kw: Any) -> None:
        """`target` is host:port (default localhost:50051); then kimina-client's `headers`,
        `http_timeout`, `n_retries` and `api_url` (its name for the target); see AsyncKiminaClient."""
        self.target = target or kw.get("api_url") or "localhost:50051"
        self.api_key = api_key
        full = (target, api_key, *args)
        self._local: PerProcess[_Backend] = PerProcess(
            lambda: InProcess(*full, **kw) if grpc_usable() else Remote(full, kw)
        )
        self._local.get()  # a bad target or TLS file is an error here, not at the first call

    @property
    def _client(self) -> AsyncKiminaClient:
        """The async client underneath (in a process that runs its own)."""
        backend = self._local.get()
        assert isinstance(backend, InProcess)
        return backend.client

    def __enter__(self) -> KiminaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes this process's channels (a fork child's close leaves its parent's alone)."""
        backend = self._local.pop()
        if backend is not None:
            backend.close()

    def verify(self, proofs: Proofs, **kw: Any) -> list[Result]:
        return self._local.get().call("verify", proofs, **kw)  # type: ignore[no-any-return]

    def verify_stream(self, proofs: Proofs, **kw: Any) -> Iterator[Result]:
        return self._local.get().stream(proofs, **kw)

    def check(self, snips: Proofs, timeout: float = 60, *args: Any, **kw: Any) -> CheckResponse:
        """Kimina's `check`, its arguments in its order (see AsyncKiminaClient.check)."""
        return self._local.get().call("check", snips, timeout, *args, **kw)  # type: ignore[no-any-return]

    def api_check(self, snippets: Proofs, *args: Any, **kw: Any) -> CheckResponse:
        """Kimina's one-batch check (see AsyncKiminaClient.api_check)."""
        return self._local.get().call("api_check", snippets, *args, **kw)  # type: ignore[no-any-return]

    def test(self) -> None:
        """Kimina's smoke test (see AsyncKiminaClient.test)."""
        self._local.get().call("test")

    def run_benchmark(self, *args: Any, **kw: Any) -> dict[str, Any]:
        """Kimina's `run_benchmark(dataset_name, split, n, batch_size, max_workers, timeout, reuse,
        show_progress)`, plus `output`; see _kimina.run_benchmark."""
        return run_benchmark(self, *args, **kw)

    def export_ast(self, modules: Iterable[str] | None = None, **kw: Any) -> list[AstResult]:
        return self._local.get().call("export_ast", modules, **kw)  # type: ignore[no-any-return]

    def health(self, service: str = READINESS) -> bool:
        return self._local.get().call("health", service)  # type: ignore[no-any-return]

    def health_status(self, service: str = READINESS) -> str:
        return self._local.get().call("health_status", service)  # type: ignore[no-any-return]

    def backends(self) -> list[BackendStats]:
        """A cluster target's backends and their counts (see AsyncKiminaClient.backends)."""
        return self._local.get().call("backends")  # type: ignore[no-any-return]

    def server_info(self) -> ServerInfo:
        """What the server runs (see AsyncKiminaClient.server_info)."""
        return self._local.get().call("server_info")  # type: ignore[no-any-return]

    def session(self, code: str, **kw: Any) -> Session:
        """`with client.session(code) as s:` (see AsyncKiminaClient.session). Not in a process
        forked from one that used gRPC (its calls run in a helper process there): use the 'spawn'
        or 'forkserver' start method for interactive sessions."""
        backend = self._local.get()
        if not isinstance(backend, InProcess):
            raise ForkedProcessError(
                "interactive sessions cannot run in a process forked from one that used gRPC: "
                "use the 'spawn' or 'forkserver' start method"
            )
        return Session(backend._run(_session(backend.client, code, kw)), backend._loop)


class _Backend(Protocol):
    def call(self, name: str, *args: Any, **kw: Any) -> Any: ...

    def stream(self, *args: Any, **kw: Any) -> Iterator[Any]: ...

    def close(self) -> None: ...


class InProcess:
    """An AsyncKiminaClient on its own event loop thread in this process."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kimina-client", daemon=True)
        self._thread.start()
        try:
            self.client: AsyncKiminaClient = self._run(_make(args, kw))
        except BaseException:
            self._stop_loop()
            raise
        self._blocking = Blocking(self.client, self._loop)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def call(self, name: str, *args: Any, **kw: Any) -> Any:
        answer = getattr(self.client, name)(*args, **kw)
        return self._run(answer) if asyncio.iscoroutine(answer) else answer

    def stream(self, *args: Any, **kw: Any) -> Iterator[Result]:
        return self._blocking.verify_stream(*args, **kw)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.client.close())
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def _make(args: tuple[Any, ...], kw: dict[str, Any]) -> AsyncKiminaClient:
    return AsyncKiminaClient(*args, **kw)  # the channel must be made on the loop that uses it


async def _session(client: AsyncKiminaClient, code: str, kw: dict[str, Any]) -> AsyncSession:
    return client.session(code, **kw)  # its queues belong to the client's loop
