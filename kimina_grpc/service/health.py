"""The gRPC health service and reflection: the names probes ask for, and readiness following the pool."""

from __future__ import annotations

import asyncio

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from kimina_grpc.supervisor.pool import Supervisor
from kimina_grpc.v1 import verifier_pb2

log = structlog.get_logger("kimina_grpc.server")

SERVICE_NAME = verifier_pb2.DESCRIPTOR.services_by_name["VerifierService"].full_name
LIVENESS = "liveness"
"""Health service name that is SERVING while the process works (Kubernetes livenessProbe)."""
READINESS = (SERVICE_NAME, "")
"""Health service names that are SERVING once pre-warm is done, until drain (readinessProbe)."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def add_health(server: grpc.aio.Server, *, reflect: bool = False) -> HealthServicer:
    """The health service on `server`; with `reflect`, reflection naming the verifier and health."""
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if reflect:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
    return health


async def set_ready(health: HealthServicer, ready: bool) -> None:
    for name in READINESS:
        await health.set(name, SERVING if ready else NOT_SERVING)


async def follow_readiness(supervisor: Supervisor, health: HealthServicer) -> None:
    """Readiness follows the pool both ways: ready once pre-warm is done, unready (with the reason
    logged) while the REPL cannot start or a pre-warm header fails, ready again when the cause is
    fixed. Liveness stays SERVING: a restart would not help. Runs until cancelled."""
    serving: bool | None = None
    last = (-1, -1)
    while True:
        ready = supervisor.ready
        if not ready and serving is None:
            progress = supervisor.warmup_progress()
            if progress != last:
                log.info("warming_up", done=progress[0], total=progress[1])
                last = progress
        if ready != serving:
            await set_ready(health, ready)
            if ready:
                log.info("ready")
            elif serving is not None:
                log.warning("not_ready", reason=supervisor.not_ready_reason)
            serving = ready
        await asyncio.sleep(0.1)
