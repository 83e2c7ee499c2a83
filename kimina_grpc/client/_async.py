"""AsyncKiminaClient: the one implementation; KiminaClient runs it on a private event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kimina_grpc.client._backends import BackendSet, BackendStats, ClusterOptions, parse_targets
from kimina_grpc.client._calls import Calls
from kimina_grpc.client._channel import Pem, channel_args, channel_credentials
from kimina_grpc.client._dispatch import ClusterCall, verify_in_order
from kimina_grpc.client._errors import KiminaError, reconnect_delay, translate
from kimina_grpc.client._info import ServerInfo, server_info_from_proto
from kimina_grpc.client._kimina import client_options, run_benchmark
from kimina_grpc.client._process import open_channel
from kimina_grpc.client._rows import Proofs, as_proofs, iter_proofs
from kimina_grpc.client._session import AsyncSession
from kimina_grpc.client._types import AstResult, CheckResponse, Result, not_checked
from kimina_grpc.client._wire import ast_from_proto, options
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

READINESS = "kimina_grpc.v1.VerifierService"


class AsyncKiminaClient:
    """Async client for a kimina-grpc server, or a cluster of them: a target with comma-separated
    addresses or `dns:///name:port` (a headless Service) is a set of backends, and one
    verify_stream, verify or check spreads over all the ready ones (`cluster` tunes how; see
    docs/cluster.md). Unary calls (health, server_info, export_ast) go round_robin.

    Retries UNAVAILABLE and RESOURCE_EXHAUSTED (bounded, exponential, honouring the server's retry
    delay); raises InvalidArgument / Unauthenticated / KiminaError for the rest. Without `api_key`,
    LEAN_SERVER_API_KEY is used when set.

    `tls=True` speaks TLS, trusting the system's roots or `ca`; `cert` and `key` present a client
    certificate (mutual TLS). Each is a PEM file's path or its bytes.
    """

    def __init__(  # Kimina's positional order
        self,
        target: str | None = None,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        http_timeout: float | None = None,
        n_retries: int | None = None,
        *,
        api_url: str | None = None,
        batch_size: int = 1000,
        max_attempts: int = 6,
        tls: bool = False,
        ca: Pem | None = None,
        cert: Pem | None = None,
        key: Pem | None = None,
        cluster: ClusterOptions | None = None,
    ) -> None:
        """`target` is host:port (default localhost:50051); `api_url`, `headers`, `http_timeout` and
        `n_retries` are kimina-client's (see _kimina.client_options)."""
        del http_timeout
        api_key, attempts = client_options(api_key, headers, n_retries)
        max_attempts = attempts or max_attempts
        given = target or api_url or "localhost:50051"
        target, opts = channel_args(given)
        credentials = channel_credentials(ca, cert, key) if tls or ca is not None or cert is not None else None
        self._channel = open_channel(target, opts, credentials)
        self._stub = pb_grpc.VerifierServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        api_key = api_key or os.environ.get("LEAN_SERVER_API_KEY")  # as the CLI and Kimina's client do
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._calls = Calls(self._stub, self._metadata, max_attempts)
        targets = parse_targets(given)
        self._cluster: BackendSet | None = None
        if targets is not None:
            backend_opts = [o for o in opts if o[0] != "grpc.service_config"]
            if credentials is not None and targets.dns is not None:  # dialled by IP: the certificate names the Service
                backend_opts.append(("grpc.ssl_target_name_override", targets.dns[0]))
            self._cluster = BackendSet(
                targets,
                lambda address: open_channel(address, backend_opts, credentials),
                self._metadata,
                cluster or ClusterOptions(),
            )

    async def __aenter__(self) -> AsyncKiminaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._cluster is not None:
            await self._cluster.close()
        await self._channel.close()

    def backends(self) -> list[BackendStats]:
        """A cluster target's backends: state, REPLs and per-backend counts (empty for one address)."""
        return self._cluster.stats() if self._cluster is not None else []

    def _patience(self) -> float:
        """How long a cluster call waits with no ready backend: ClusterOptions.unavailable_after, or
        as long as a stream's reconnects would (`max_attempts`)."""
        given = self._cluster.options.unavailable_after if self._cluster is not None else None
        return given if given is not None else sum(reconnect_delay(f) for f in range(1, self._max_attempts))

    async def verify(
        self,
        proofs: Proofs,
        *,
        timeout: float | None = 60.0,
        infotree: str | None = None,
        reuse: bool = True,
        diagnostics: bool = False,
        id_column: str | None = None,
        code_column: str | None = None,
        trust: str | None = None,
        allowed_axioms: Iterable[str] = (),
        cache: bool = True,
    ) -> list[Result]:
        """Check proofs (strings, Proofs, dicts, or a `datasets.Dataset` whose id/code columns are
        detected or named); results in input order. Large inputs go in batches of `batch_size`.
        `trust` is "check", "audit" or "judge" (default: the server's); audit and judge need each
        Proof's `statement` or `theorem_name`; `allowed_axioms` adds to propext, Classical.choice and
        Quot.sound (e.g. "Lean.ofReduceBool" for native_decide). `cache=False`: check with Lean even
        when the server holds a result, and store nothing."""
        items = as_proofs(proofs, id_column, code_column)
        opts = options(timeout, infotree, reuse, diagnostics, trust, allowed_axioms, None if cache else False)
        if self._cluster is not None:
            return await verify_in_order(self._cluster, items, opts, self._metadata, self._patience())
        return await self._calls.verify(items, opts, self._batch_size)

    async def verify_stream(
        self,
        proofs: Proofs,
        *,
        timeout: float | None = 60.0,
        window: int = 64,
        infotree: str | None = None,
        reuse: bool = True,
        diagnostics: bool = False,
        id_column: str | None = None,
        code_column: str | None = None,
        trust: str | None = None,
        allowed_axioms: Iterable[str] = (),
        cache: bool = True,
    ) -> AsyncIterator[Result]:
        """Results as they finish. At most `window` proofs in flight. When the stream breaks with
        UNAVAILABLE, reconnects and re-sends the proofs not yet answered: each id is yielded once.
        An id may come again only once its result is out (a repeated id in flight is a ValueError:
        its results could not be told apart). `trust`, `allowed_axioms` and `cache` as for `verify`.
        Over a cluster, `window` bounds each backend (and 4 proofs per REPL), ClusterOptions'
        `max_in_flight` the whole call; a broken sub-stream's proofs go to the other backends."""
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        source = iter_proofs(proofs, id_column, code_column)
        opts = options(timeout, infotree, reuse, diagnostics, trust, allowed_axioms, None if cache else False)
        if self._cluster is not None:
            async for result in ClusterCall(self._cluster, opts, window, self._metadata, self._patience()).run(source):
                yield result
            return
        async for result in self._calls.stream(source, opts, window):
            yield result

    async def check(  # noqa: PLR0917  (Kimina's positional order)
        self,
        snips: Proofs,
        timeout: float = 60,
        debug: bool = False,
        reuse: bool = True,
        infotree: str | None = None,
        batch_size: int = 8,
        max_workers: int = 5,
        show_progress: bool = False,
    ) -> CheckResponse:
        """Kimina's `check`: a string, strings, Snippets, or dicts with Kimina's field names; results
        in input order. Kimina's `batch_size` x `max_workers` proofs were in flight at once: that is
        the stream's window here (one stream, no HTTP batches). `debug` asks for diagnostics;
        `show_progress` is accepted and ignored (the client has no progress bar)."""
        del show_progress
        items = as_proofs(snips)
        if len({p.id for p in items}) != len(items):
            raise ValueError("snippet ids must be unique (as Kimina requires)")
        got = {
            r.id: r
            async for r in self.verify_stream(
                items,
                timeout=timeout,
                window=max(1, batch_size * max_workers),
                infotree=infotree,
                reuse=reuse,
                diagnostics=debug,
            )
        }
        return CheckResponse([got[p.id] for p in items])

    async def api_check(  # noqa: PLR0917  (Kimina's positional order)
        self,
        snippets: Proofs,
        timeout: float = 30,
        debug: bool = False,
        reuse: bool = True,
        infotree: str | None = None,
        safe: bool = False,
    ) -> CheckResponse:
        """Kimina's one-batch check (one Verify); `safe=True` answers a failed call with a result per
        snippet carrying the error (NOT_CHECKED) instead of raising."""
        items = as_proofs(snippets)
        try:
            return CheckResponse(
                await self.verify(items, timeout=timeout, infotree=infotree, reuse=reuse, diagnostics=debug)
            )
        except (KiminaError, ValueError) as exc:
            if not safe:
                raise
            return CheckResponse([not_checked(p.id, str(exc).splitlines()[0]) for p in items])

    async def test(self) -> None:
        """Kimina's smoke test: `#check Nat` must check; raises AssertionError with the verdict if not."""
        [result] = (await self.check("#check Nat")).results
        if not result.ok:
            raise AssertionError(f"#check Nat: {result.verdict.name} {result.error}".strip())

    async def run_benchmark(self, *args: Any, **kw: Any) -> dict[str, Any]:
        """Kimina's `run_benchmark` (see _kimina.run_benchmark); the blocking work (the dataset, the
        report) runs in a worker thread, the stream on this loop."""
        return await asyncio.to_thread(run_benchmark, Blocking(self, asyncio.get_running_loop()), *args, **kw)

    async def export_ast(
        self,
        modules: Iterable[str] | None = None,
        *,
        code: str | None = None,
        module: str = "User.Code",
        one: bool = True,
        timeout: float | None = None,
    ) -> list[AstResult]:
        request = pb.ExportAstRequest(modules=list(modules or ()), code=code or "", module=module, one=one)
        if timeout is not None:
            request.timeout_seconds = timeout
        reply = await self._calls.unary(lambda: self._stub.ExportAst(request, metadata=self._metadata))
        return [ast_from_proto(r) for r in reply.results]

    async def health(self, service: str = READINESS) -> bool:
        """Whether the server is ready (or, with service="liveness", alive); False when unreachable."""
        try:
            return await self.health_status(service) == "SERVING"
        except KiminaError:
            return False

    async def health_status(self, service: str = READINESS) -> str:
        """The health service's answer by name (SERVING, NOT_SERVING, ...); raises KiminaError when
        the server cannot be reached or has no such service."""
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.RpcError as err:
            raise translate(err) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def session(
        self,
        code: str,
        *,
        timeout: float | None = None,
        trust: str | None = None,
        statement: str | None = None,
        theorem_name: str | None = None,
        allowed_axioms: Iterable[str] = (),
    ) -> AsyncSession:
        """An interactive proof session on `code` (its `sorry`s are the goals): `async with
        client.session(code) as s:` then `s.roots`, `await s.run(state, tactic)`, `s.run_many`,
        `s.finish(state)`. `timeout` bounds each tactic; the rest apply to `finish` as to verify."""
        opts = options(timeout, None, None, None, trust, allowed_axioms)
        if statement is not None:
            opts.statement = statement
        if theorem_name is not None:
            opts.theorem_name = theorem_name
        return AsyncSession(self._stub, self._metadata, code, opts)

    async def server_info(self) -> ServerInfo:
        """What the server runs (versions, the REPL command, readiness) and how its pool and cache stand."""
        reply = await self._calls.unary(
            lambda: self._stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=self._metadata)
        )
        return server_info_from_proto(reply)


class Blocking:
    """An AsyncKiminaClient's verify_stream as a blocking iterator, for code in another thread than
    the client's loop (KiminaClient, run_benchmark's worker thread)."""

    def __init__(self, client: AsyncKiminaClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    def verify_stream(self, proofs: Proofs, **kw: Any) -> Iterator[Result]:
        stream = self._client.verify_stream(proofs, **kw)
        try:
            while True:
                try:
                    yield asyncio.run_coroutine_threadsafe(anext(stream), self._loop).result()  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            if not self._loop.is_closed():
                asyncio.run_coroutine_threadsafe(stream.aclose(), self._loop).result()  # type: ignore[attr-defined]
