"""The backends a cluster target names, each with a channel of its own, and their readiness.

A target with comma-separated addresses, or `dns:///name:port` (a Kubernetes headless Service: every
A/AAAA record is a replica), is a set of backends. The client resolves the name itself, every
`resolve_every` seconds and at once after a backend failed, so replicas that come and go are seen
without a new client. Each backend's readiness comes from its health service (the server's
readiness, `kimina_grpc.v1.VerifierService`), checked every `check_every` seconds while a call runs:
SERVING → ready (new proofs), NOT_SERVING → draining (finishes what it holds, gets nothing new), no
answer → down. Each change is logged once (`backend joined`, `backend draining`, `backend lost`).

Mechanics only: which backend gets a proof is `_balance.Balancer`'s; the calls are `_dispatch`'s.
Nothing runs between calls: the monitor starts with a client's first running call and stops, awaited,
with its last, so no task outlives what started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kimina_grpc.client._balance import Balancer
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

log = logging.getLogger("kimina_grpc.client")
READINESS = "kimina_grpc.v1.VerifierService"
DEFAULT_PORT = 50051

Resolver = Callable[[str, int], Awaitable[Sequence[str]] | Sequence[str]]
"""(host, port) → the backends' addresses (`ip:port`, `[ipv6]:port`); sync or async."""


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """How a client spreads one call over several backends (see docs/cluster.md)."""

    affinity: bool = True
    """Send a header's proofs to its preferred backends (rendezvous hashing); False: shortest queue."""
    max_in_flight: int = 4096
    """At most this many of a call's proofs held by the client (sent or waiting), all backends together."""
    resolve_every: float = 5.0
    """Seconds between DNS resolutions of a `dns:///` target (and at once after a failure)."""
    check_every: float = 1.0
    """Seconds between readiness checks of each backend while a call runs."""
    ready_wait: float = 5.0
    """A call's look at the backends waits at most this long for their readiness answers (the
    client's first call also for reachable backends still pre-warming)."""
    unavailable_after: float | None = None
    """A call with work left and no ready backend for this long fails with UNAVAILABLE (default: as
    long as the client's `max_attempts` reconnects of one stream would wait)."""
    resolve: Resolver | None = None
    """Replaces DNS (tests, service discovery of your own): (host, port) → addresses."""

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {self.max_in_flight}")
        for name in ("resolve_every", "check_every", "ready_wait", "unavailable_after"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be more than 0 seconds, not {value}")


@dataclass(frozen=True, slots=True)
class Targets:
    """What a cluster target names: fixed addresses, or a DNS name to resolve."""

    addresses: tuple[str, ...] = ()
    dns: tuple[str, int] | None = None


def parse_targets(target: str) -> Targets | None:
    """The backends of a cluster target; None for a single address (one channel, as always)."""
    if target.startswith("dns:"):
        rest = target.removeprefix("dns:")
        if rest.startswith("//"):
            rest = rest[2:].split("/", 1)[1] if "/" in rest[2:] else ""  # dns://[authority]/name:port
        host, port = split_address(rest)
        if not host:
            raise ValueError(f"{target!r} names no host (dns:///name:port)")
        return Targets(dns=(host, port))
    addresses = [a.strip() for a in target.split(",") if a.strip()]
    if len(addresses) < 2:
        return None
    return Targets(addresses=tuple(join_address(*split_address(a.removeprefix("ipv4:"))) for a in addresses))


def split_address(address: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `host` (port 50051)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    host, sep, port = address.rpartition(":")
    if not sep or ":" in host:  # no port, or a bare IPv6 address
        return address, DEFAULT_PORT
    return host, int(port)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve_dns(host: str, port: int) -> list[str]:
    """Every A/AAAA record of `host` as an address (a headless Service answers one per ready pod)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({join_address(str(info[4][0]), port) for info in infos})


@dataclass(frozen=True, slots=True)
class BackendStats:
    """One backend as a caller sees it: `client.backends()`."""

    address: str
    state: str
    """ready, draining, down, starting (reachable, not ready yet), new (not checked yet), removed."""
    repls: int
    sent: int
    """Proofs sent to it (re-sends included), all calls of this client."""
    answered: int
    resent: int
    """Its proofs sent to another backend after it failed or refused them (shutting down)."""
    spilled: int
    """Proofs it got although another backend was their header's preferred one (that one was full)."""


class Backend:
    def __init__(self, address: str, channel: grpc.aio.Channel) -> None:
        self.address = address
        self.channel = channel
        self.stub = pb_grpc.VerifierServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.state = "new"
        self.repls = 0
        self.failed_at = float("-inf")
        self.sent = self.answered = self.resent = self.spilled = 0
        self.users = 0  # calls that hold its proofs: its channel closes after the last once removed
        self.in_flight = 0  # proofs of all this client's calls sent to it and not answered

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def stats(self) -> BackendStats:
        return BackendStats(self.address, self.state, self.repls, self.sent, self.answered, self.resent, self.spilled)


class BackendSet:
    """The backends of one client, and the monitor that keeps their state while calls run."""

    def __init__(
        self,
        targets: Targets,
        channel: Callable[[str], grpc.aio.Channel],
        metadata: tuple[tuple[str, str], ...],
        options: ClusterOptions,
    ) -> None:
        self._targets = targets
        self._channel = channel
        self._metadata = metadata
        self.options = options
        self.balancer = Balancer(affinity=options.affinity)  # the client's: headers keep their owners across calls
        self.backends: dict[str, Backend] = {}
        self._calls = 0
        self._monitor: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._listeners: set[asyncio.Event] = set()
        self._resolve_failed = False
        self._looked = False

    def stats(self) -> list[BackendStats]:
        return [b.stats() for b in self.backends.values()]

    def describe(self) -> str:
        names = ", ".join(f"{b.address} ({b.state})" for b in self.backends.values())
        return names or (self._targets.dns and f"{self._targets.dns[0]} (no address)") or "none"

    async def start(self, changed: asyncio.Event) -> None:
        """A call begins: the first one looks at the backends (bounded) and starts the monitor."""
        self._listeners.add(changed)
        self._calls += 1
        if self._monitor is None:
            self._monitor = asyncio.create_task(self._watch(), name="kimina-cluster-monitor")
        if self._calls == 1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._look(), self.options.ready_wait)

    async def stop(self, changed: asyncio.Event) -> None:
        """A call ended: the last one stops the monitor and closes removed backends' channels."""
        self._listeners.discard(changed)
        self._calls -= 1
        if self._calls == 0 and self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)
        for backend in [b for b in self.backends.values() if b.state == "removed" and not b.users]:
            del self.backends[backend.address]
            await backend.channel.close()

    async def _look(self) -> None:
        """A round; the client's first also waits for the backends that answer but are not ready yet
        (pre-warming), so its first call spreads instead of filling whoever was ready first."""
        await self._round(resolve=True)
        while not self._looked and any(b.state == "starting" for b in self.backends.values()):
            await asyncio.sleep(0.1)
            await self._round(resolve=False)
        self._looked = True

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
            self._monitor = None
        backends, self.backends = list(self.backends.values()), {}
        await asyncio.gather(*(b.channel.close() for b in backends), return_exceptions=True)

    def failed(self, backend: Backend) -> None:
        """A call's sub-stream to `backend` broke: no new proofs until its health says SERVING again
        (after this moment), and resolve the name again now."""
        backend.failed_at = time.monotonic()
        if backend.state in ("ready", "draining", "new", "starting"):
            self._set(backend, "down")
        self._wake.set()

    def released(self) -> None:
        """A call got a result: a slot freed that another call of this client may be waiting for."""
        if len(self._listeners) > 1:
            self._notify()

    def refused(self, backend: Backend) -> None:
        """`backend` answered a proof `retryable` (it is shutting down): no new proofs."""
        if backend.state == "ready":
            self._set(backend, "draining")
        self._wake.set()

    async def _watch(self) -> None:
        last_resolve = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.options.check_every)
            woken = self._wake.is_set()
            self._wake.clear()
            resolve = woken or time.monotonic() - last_resolve >= self.options.resolve_every
            if resolve:
                last_resolve = time.monotonic()
            await self._round(resolve)

    async def _round(self, resolve: bool) -> None:
        if resolve:
            await self._resolve()
        started = time.monotonic()
        live = [b for b in self.backends.values() if b.state != "removed"]
        states = await asyncio.gather(*(self._check(b) for b in live))
        joining = [b for b, state in zip(live, states, strict=True) if state == "ready" and not b.ready]
        await asyncio.gather(*(self._learn(b) for b in joining))
        for backend, state in zip(live, states, strict=True):
            if backend.state == "removed" or (state == "ready" and backend.failed_at >= started):
                continue  # removed meanwhile, or the answer predates a failure a call saw
            self._set(backend, state)
        self._notify()

    async def _resolve(self) -> None:
        targets = self._targets
        if targets.dns is None:
            addresses: Sequence[str] = targets.addresses
        else:
            try:
                addresses = await _call_resolver(self.options.resolve or resolve_dns, *targets.dns)
            except (OSError, ValueError) as exc:
                if not self._resolve_failed:
                    log.warning("cannot resolve %s: %s (keeping the backends known)", targets.dns[0], exc)
                self._resolve_failed = True
                return
            self._resolve_failed = False
        for address in addresses:
            backend = self.backends.get(address)
            if backend is None:
                self.backends[address] = Backend(address, self._channel(address))
            elif backend.state == "removed":
                backend.state = "new"
        for backend in self.backends.values():
            if backend.address not in addresses and backend.state != "removed":
                self._set(backend, "removed")

    async def _check(self, backend: Backend) -> str:
        try:
            reply = await backend.health.Check(health_pb2.HealthCheckRequest(service=READINESS), timeout=2)
        except grpc.RpcError:
            return "down"
        except asyncio.CancelledError:
            raise
        return "ready" if reply.status == health_pb2.HealthCheckResponse.SERVING else "draining"

    async def _learn(self, backend: Backend) -> None:
        """Its REPLs, which size its share of a call's window (unknown: 0, the call's window)."""
        try:
            info = await backend.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=self._metadata, timeout=5)
        except grpc.RpcError:
            return
        backend.repls = int(info.max_repls)

    def _set(self, backend: Backend, state: str) -> None:
        old = backend.state
        if state == "draining" and old not in ("ready", "draining"):
            state = "starting"  # reachable, not ready yet (pre-warming, restarting): nothing to drain
        backend.state = state
        if state == old:
            return
        if state == "ready":
            log.info("backend joined: %s (%d REPLs)", backend.address, backend.repls)
        elif state == "draining" and old == "ready":
            log.info("backend draining: %s (gets no new proofs; finishes what it holds)", backend.address)
        elif state == "down" and old in ("ready", "draining"):
            log.warning("backend lost: %s (its unanswered proofs go to the others)", backend.address)
        elif state == "removed":
            log.info("backend removed: %s (no longer in %s)", backend.address, self._targets.dns)
        self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            listener.set()


async def _call_resolver(resolve: Resolver, host: str, port: int) -> Sequence[str]:
    found = resolve(host, port)
    addresses = await found if inspect.isawaitable(found) else found
    return [join_address(*split_address(a)) for a in addresses]
