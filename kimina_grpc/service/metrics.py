"""Prometheus metrics: what callers got (verdicts, times, invalid stream items), the pool's state and
the cache's counters.

Results are counted where the service hands them out; the pool is read at scrape time. The HTTP
endpoint is a small asyncio server on the event loop (the supervisor is not thread-safe): an idle
connection costs a socket, not a thread, and is closed after READ_TIMEOUT seconds.
Header strings come from callers, so no metric is labelled by header (GetServerInfo has the detail).
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator
from typing import Any

import grpc
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from kimina_grpc.cache import CheckCache
from kimina_grpc.service.health import SERVICE_NAME
from kimina_grpc.service.posture import BindError, Posture
from kimina_grpc.supervisor.jobs import Outcome
from kimina_grpc.supervisor.pool import Supervisor
from kimina_grpc.verdict import Verdict

# Lean checks take 0.01 s to many minutes.
_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
READ_TIMEOUT = 10.0
"""Seconds a metrics connection may take to send its request (and to read the answer)."""
_MAX_HEAD = 16 << 10
MAX_CONNECTIONS = 64
"""Metrics connections open at once; a new one past it closes the oldest still waiting for its
request (a scraper's request follows its connect at once; idle ones would hold a descriptor each
for READ_TIMEOUT, and 600 of them took every descriptor the server had)."""


class Metrics:
    def __init__(self, supervisor: Supervisor, cache: CheckCache | None = None) -> None:
        self.registry = CollectorRegistry()
        proofs = Counter(
            "kimina_proofs", "Proof results handed to callers, by verdict.", ["verdict"], registry=self.registry
        )
        self._by_verdict = {v: proofs.labels(v.name.lower()) for v in Verdict}
        self._invalid = Counter(
            "kimina_stream_items_invalid",
            "StreamVerify items answered NOT_CHECKED because they failed validation.",
            registry=self.registry,
        )
        self._check = Histogram(
            "kimina_proof_check_seconds", "Seconds a proof spent in its REPL.", buckets=_BUCKETS, registry=self.registry
        )
        self._queue = Histogram(
            "kimina_proof_queue_seconds",
            "Seconds a proof waited for a REPL.",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        # The names and labels of go-grpc-prometheus / py-grpc-prometheus, so stock dashboards work.
        self._handled = Counter(
            "grpc_server_handled",
            "RPCs finished on the server, by status code.",
            ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
            registry=self.registry,
        )
        self._handling = Histogram(
            "grpc_server_handling_seconds",
            "Seconds from the start of an RPC to its end.",
            ["grpc_service", "grpc_method", "grpc_type"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._sandboxed = Gauge(
            "kimina_sandbox_enabled",
            "1 when REPLs and exporters run in bubblewrap's box; 0 means proofs run with the server's rights.",
            registry=self.registry,
        )
        self._auth = Gauge("kimina_auth_enabled", "1 when callers must send the API key.", registry=self.registry)
        self._tls = Gauge("kimina_tls_enabled", "1 when the gRPC port speaks TLS.", registry=self.registry)
        self.registry.register(_PoolCollector(supervisor))
        if cache is not None:
            self.registry.register(_CacheCollector(cache))
        self._http: Any = None
        self._open = 0
        self._waiting: dict[asyncio.StreamWriter, None] = {}  # connections yet to send a request, oldest first

    def posture(self, posture: Posture) -> None:
        self._sandboxed.set(int(posture.sandbox != "off"))
        self._auth.set(int(posture.auth_required))
        self._tls.set(int(posture.tls))

    def result(self, outcome: Outcome) -> None:
        self._by_verdict[outcome.verdict].inc()
        if outcome.repl_id and not (outcome.from_cache or outcome.shared):  # its own check reached a REPL
            self._check.observe(outcome.time_seconds)
            self._queue.observe(outcome.queue_seconds)

    def rpc(self, method: str, kind: str, code: grpc.StatusCode, seconds: float) -> None:
        self._handled.labels(SERVICE_NAME, method, kind, code.name).inc()
        self._handling.labels(SERVICE_NAME, method, kind).observe(seconds)

    def invalid(self) -> None:
        self._by_verdict[Verdict.NOT_CHECKED].inc()
        self._invalid.inc()

    async def serve(self, host: str, port: int) -> int:
        """Serve /metrics over HTTP from the event loop; returns the bound port. Raises BindError
        (one line naming LEAN_SERVER_METRICS_PORT) when the address cannot be bound."""
        try:
            self._http = await asyncio.start_server(self._answer, host, port, limit=_MAX_HEAD)
        except OSError as exc:
            reason = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise BindError(f"cannot listen on {host}:{port} (LEAN_SERVER_METRICS_PORT): {reason}") from None
        return int(self._http.sockets[0].getsockname()[1])

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection (HTTP/1.1 with `Connection: close`), all within READ_TIMEOUT;
        at most MAX_CONNECTIONS at once."""
        self._open += 1
        if self._open > MAX_CONNECTIONS and self._waiting:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.transport.abort()
        self._waiting[writer] = None
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                self._waiting.pop(writer, None)
                method, _, rest = head.partition(b" ")
                path = rest.partition(b" ")[0].partition(b"?")[0]
                if method not in (b"GET", b"HEAD"):
                    status, body = "405 Method Not Allowed", b""
                elif path not in (b"/metrics", b"/"):
                    status, body = "404 Not Found", b""
                else:
                    status, body = "200 OK", generate_latest(self.registry)
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE_LATEST}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                )
                if method != b"HEAD":
                    writer.write(body)
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.transport.abort()  # silent, slow or oversized: drop it without waiting on the peer
        finally:
            self._open -= 1
            self._waiting.pop(writer, None)
            writer.close()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


class _PoolCollector(Collector):
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Any]:
        state = self.supervisor.state()
        repls = GaugeMetricFamily("kimina_repls", "REPL processes by state.", labels=["state"])
        for name, count in (
            ("warm", sum(h.warm for h in state.headers)),
            ("busy", sum(h.busy for h in state.headers)),
            ("starting", sum(h.starting for h in state.headers)),
            ("spare", sum(h.spares for h in state.headers)),
        ):
            repls.add_metric([name], count)
        yield repls
        yield GaugeMetricFamily("kimina_queued_proofs", "Proofs waiting for a REPL.", value=state.queued)
        yield GaugeMetricFamily(
            "kimina_queue_capacity", "LEAN_SERVER_MAX_QUEUE.", value=self.supervisor.settings.max_queue
        )
        yield GaugeMetricFamily("kimina_headers", "Headers with REPLs or queued proofs.", value=len(state.headers))
        yield GaugeMetricFamily("kimina_ready", "1 once pre-warming is done.", value=int(state.ready))
        for name, value, text in (
            ("imports", state.imports, "Headers imported (REPL starts that reached their header's env)."),
            ("recycles", state.recycles, "REPLs retired to be replaced (use limit, memory, header change)."),
            ("kills", state.kills, "REPLs killed during a proof (timeout or memory watchdog)."),
            ("crashes", state.crashes, "REPLs that died by themselves."),
            ("warm_swaps", state.warm_swaps, "REPLs replaced by a warm spare (LEAN_SERVER_SPARE_REPLS)."),
            ("cold_swaps", state.cold_swaps, "REPLs replaced by a new process that imported first."),
        ):
            yield CounterMetricFamily(f"kimina_repl_{name}", text, value=value)


class _CacheCollector(Collector):
    """Reads plain integers the event loop writes: no need to go through the loop."""

    def __init__(self, cache: CheckCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Any]:
        stats = self.cache.stats()
        for name, value, text in (
            ("hits", stats.hits, "Proofs answered from the result cache (memory or Redis)."),
            ("misses", stats.misses, "Proofs looked up in the cache and not found: each started a Lean check."),
            ("dedupe_joins", stats.joins, "Proofs that joined an identical check already queued or running."),
            ("backend_errors", stats.backend_errors, "Failed or timed-out requests to the shared cache (Redis)."),
        ):
            yield CounterMetricFamily(f"kimina_cache_{name}", text, value=value)
        yield GaugeMetricFamily("kimina_cache_bytes", "Bytes held by the in-memory result cache.", value=stats.bytes)
        yield GaugeMetricFamily("kimina_cache_entries", "Results held by the in-memory cache.", value=stats.entries)
        yield GaugeMetricFamily(
            "kimina_cache_backend_up", "1 while Redis answers (also 1 without Redis).", value=int(stats.remote_up)
        )
