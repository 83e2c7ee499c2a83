"""Where cached results live: an in-memory LRU bounded in bytes, and optionally Redis shared by
every replica. Redis is a help, never a dependency: each request is bounded by a short timeout; a
failure is logged once, counted, and Redis is skipped until a retry interval has passed."""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kimina_grpc.repl import Verdict
from kimina_grpc.repl.protocol import ProtocolError, reply_from_json, reply_to_json
from kimina_grpc.supervisor.jobs import Outcome

log = structlog.get_logger("kimina_grpc.cache")

# Lean's judgement of the proof, the same every time: the only outcomes worth keeping (UNTRUSTED is
# a trust rule's judgement of Lean's answers; a review that failed is TIMEOUT or REPL_ERROR). TIMEOUT,
# OUT_OF_MEMORY, REPL_ERROR and NOT_CHECKED say something about the machine at that moment.
CACHEABLE = frozenset({Verdict.VALID, Verdict.INVALID, Verdict.SORRY, Verdict.UNTRUSTED})


def encode(outcome: Outcome) -> bytes:
    # The info tree stays the JSON text it is: parsing it again would stall the loop and can go
    # deeper than Python's recursion bound (repl/decode.py).
    reply = outcome.reply
    return json.dumps(
        {
            "verdict": outcome.verdict.name,
            "reply": None if reply is None else reply_to_json(replace(reply, infotree=None)),
            "infotree": None if reply is None else reply.infotree,
            "time": outcome.time_seconds,
            "review": outcome.review_seconds,
            "error": outcome.error,
            "cpu": outcome.cpu_seconds,
            "peak": outcome.peak_memory_bytes,
            "reason": outcome.reason,
            "axioms": [[theorem, list(axioms)] for theorem, axioms in outcome.axioms],
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def decode(data: bytes) -> Outcome | None:
    """The stored outcome, or None for an entry this version cannot read (treated as a miss)."""
    try:
        obj = json.loads(data)
        verdict = Verdict[obj["verdict"]]
        reply = None if obj["reply"] is None else reply_from_json(obj["reply"])
        if reply is not None and isinstance(obj.get("infotree"), str):
            reply = replace(reply, infotree=obj["infotree"])
        return Outcome(
            verdict,
            reply,
            time_seconds=float(obj["time"]),
            review_seconds=float(obj.get("review", 0.0)),
            error=str(obj["error"]),
            cpu_seconds=float(obj["cpu"]),
            peak_memory_bytes=int(obj["peak"]),
            reason=str(obj["reason"]),
            axioms=tuple((str(t), tuple(str(a) for a in axioms)) for t, axioms in obj["axioms"]),
            from_cache=True,
        )
    except (ValueError, KeyError, TypeError, ProtocolError):
        return None


class MemoryStore:
    """Least recently used entries go first once the stored bytes pass `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
        return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old)
        self._entries[key] = data
        self.bytes += len(data)
        while self.bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= len(dropped)


class RedisStore:
    """Redis through redis-py's asyncio client. Never raises, never waits past `timeout`."""

    def __init__(
        self, url: str, *, ttl: float, timeout: float, retry_seconds: float, password: str | None = None
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.errors = 0
        self.up = True
        self._skip_until = 0.0
        # One retry inside the client, for a pooled connection that died with a restarted Redis; the
        # whole request stays bounded by `timeout`, then Lean checks the proof.
        self._client = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            password=password,  # a password in the URL wins
        )
        self._writes: set[asyncio.Task[None]] = set()

    def _available(self) -> bool:
        return self.up or time.monotonic() >= self._skip_until

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self._skip_until = time.monotonic() + self.retry_seconds
        if self.up:  # log once per outage; the metric counts every failure
            self.up = False
            log.warning(
                "cache_backend_down",
                error=f"{type(exc).__name__}: {exc}"[:300],
                retry_seconds=self.retry_seconds,
            )

    def _answered(self) -> None:
        if not self.up:
            self.up = True
            log.warning("cache_backend_back")

    async def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        wanted = list(keys)
        if not wanted or not self._available():
            return {}
        try:
            values: list[Any] = await asyncio.wait_for(self._client.mget(wanted), self.timeout)
        except Exception as exc:  # connection refused, reset, timeout, protocol: all mean "not now"
            self._failed(exc)
            return {}
        self._answered()
        return {k: v for k, v in zip(wanted, values, strict=True) if isinstance(v, bytes)}

    def put(self, key: str, data: bytes) -> None:
        """Store in the background: an answer never waits for Redis."""
        if not self._available():
            return
        task = asyncio.create_task(self._put(key, data))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _put(self, key: str, data: bytes) -> None:
        try:
            await asyncio.wait_for(self._client.set(key, data, ex=max(1, int(self.ttl))), self.timeout)
        except Exception as exc:
            self._failed(exc)
            return
        self._answered()

    async def close(self) -> None:
        for task in list(self._writes):
            task.cancel()
        await asyncio.gather(*self._writes, return_exceptions=True)
        try:
            await self._client.aclose()
        except Exception as exc:
            log.debug("cache_backend_close_failed", error=str(exc)[:200])
