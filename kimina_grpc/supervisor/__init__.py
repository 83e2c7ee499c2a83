"""The supervisor room: the pool of warm REPLs, the queue, scheduling by header, limits."""

from kimina_grpc.supervisor.config import PoolSettings
from kimina_grpc.supervisor.jobs import CheckOptions, Job, Outcome, PoolKey
from kimina_grpc.supervisor.pool import Supervisor
from kimina_grpc.supervisor.queue import QueueFull, ShuttingDown
from kimina_grpc.supervisor.state import PoolState

__all__ = [
    "CheckOptions",
    "Job",
    "Outcome",
    "PoolKey",
    "PoolSettings",
    "PoolState",
    "QueueFull",
    "ShuttingDown",
    "Supervisor",
]
