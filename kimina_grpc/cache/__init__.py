"""The cache room, between service and supervisor: in-flight dedupe and a result cache (in memory,
optionally shared by every replica through Redis), keyed by everything that decides a reply."""

from kimina_grpc.cache.key import environment_id, proof_key
from kimina_grpc.cache.layer import CacheStats, CheckCache, Ticket
from kimina_grpc.cache.store import CACHEABLE, MemoryStore, RedisStore

__all__ = [
    "CACHEABLE",
    "CacheStats",
    "CheckCache",
    "MemoryStore",
    "RedisStore",
    "Ticket",
    "environment_id",
    "proof_key",
]
