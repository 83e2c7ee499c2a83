"""The server's life once built: start in order, readiness, and the shutdown sequence (drain, answer
what is owed, stop)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
import structlog
from grpc_health.v1._async import HealthServicer

from kimina_grpc.cache import CheckCache
from kimina_grpc.prooflog.writer import ProofLog
from kimina_grpc.service.health import LIVENESS, SERVING, follow_readiness, set_ready
from kimina_grpc.service.metrics import Metrics
from kimina_grpc.service.posture import Posture
from kimina_grpc.service.servicer import VerifierServicer
from kimina_grpc.settings import Settings
from kimina_grpc.supervisor.pool import Supervisor

log = structlog.get_logger("kimina_grpc.server")


@dataclass
class App:
    settings: Settings
    server: grpc.aio.Server
    supervisor: Supervisor
    cache: CheckCache
    health: HealthServicer
    metrics: Metrics
    servicer: VerifierServicer
    port: int
    posture: Posture = field(default_factory=Posture)
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    metrics_port: int | None = None
    prooflog: ProofLog | None = None
    _readiness: asyncio.Task[None] | None = None
    _hurry: asyncio.Event = field(default_factory=asyncio.Event)

    def hurry(self) -> None:
        """Cut the drain period short (a second Ctrl-C); the grace for in-flight RPCs still applies."""
        self._hurry.set()

    async def start(self) -> None:
        if self.prooflog is not None:  # first: a database that cannot be used stops start-up (ProofLogError)
            await self.prooflog.start()
        if self.settings.metrics_port is not None:  # first: a port in use stops start-up with nothing begun
            host = self.settings.metrics_host or self.settings.host
            self.metrics_port = await self.metrics.serve(host, self.settings.metrics_port)
        for warning in self.posture.warnings:
            log.warning("insecure", warning=warning)
        await self.supervisor.start()
        await set_ready(self.health, False)
        await self.health.set(LIVENESS, SERVING)
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        self._readiness = asyncio.create_task(follow_readiness(self.supervisor, self.health))
        log.info(
            "serving",
            port=self.port,
            host=self.settings.host,
            metrics_port=self.metrics_port,
            health_port=self.health_port,
            max_repls=self.settings.max_repls,
            sandbox=self.posture.sandbox,
            auth=self.posture.auth_required,
            tls=self.posture.tls,
            memory_accounting=self.posture.memory_accounting,
        )

    async def stop(self) -> None:
        """Readiness off and no new work (new calls UNAVAILABLE, new stream items NOT_CHECKED); running
        proofs get the drain period to finish, every other accepted proof is answered NOT_CHECKED on its
        open call; then the REPLs are killed and the server stops, its grace for sending those answers."""
        if self._readiness is not None:
            self._readiness.cancel()
        await set_ready(self.health, False)
        log.info("draining", seconds=self.settings.drain_seconds)
        self.servicer.drain()
        draining = asyncio.ensure_future(self.supervisor.drain(self.settings.drain_seconds))
        hurried = asyncio.ensure_future(self._hurry.wait())
        await asyncio.wait({draining, hurried}, return_when=asyncio.FIRST_COMPLETED)
        draining.cancel()  # hurried: running proofs are answered NOT_CHECKED by close() now
        hurried.cancel()
        await self.supervisor.close()
        await self.servicer.close_sessions()
        self.servicer.end_streams()
        await self.server.stop(self.settings.grace_seconds)
        if self.health_server is not None:
            await self.health_server.stop(0)
        await self.cache.close()
        if self.prooflog is not None:  # every answer is handed out: write (or spool) the last rows
            await self.prooflog.close()
        self.metrics.close()
        log.info("stopped")
