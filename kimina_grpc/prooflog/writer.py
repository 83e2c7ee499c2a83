"""The log's writer: answered proofs in, rows out, never in the way of a verdict.

`record` is all the request path pays: an append to a bounded deque. A task batches the entries
(LEAN_SERVER_LOG_BATCH_SIZE, or whatever came in LEAN_SERVER_LOG_FLUSH_SECONDS), encodes them in a
worker thread and writes each batch in one transaction, bounded by LEAN_SERVER_DATABASE_TIMEOUT. A
batch the database does not take in time goes to the local spool; while the database is down no
write is tried for LEAN_SERVER_DATABASE_RETRY_SECONDS, batches go straight to the spool, and once a
write succeeds the spool is written back, oldest first. Rows lost (the spool or the deque full, a
batch the database rejects) are counted and logged once per episode.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import structlog

from kimina_grpc.database_url import VARIABLE
from kimina_grpc.prooflog import schema
from kimina_grpc.prooflog.backends import Backend, Rejected, one_line
from kimina_grpc.prooflog.errors import ProofLogError
from kimina_grpc.prooflog.record import Call, Entry, Origin, encode
from kimina_grpc.prooflog.spool import Spool
from kimina_grpc.supervisor.jobs import Outcome, TrustPolicy
from kimina_grpc.v1 import verifier_pb2 as pb

log = structlog.get_logger("kimina_grpc.prooflog")

RETENTION_EVERY = 3600.0
"""Seconds between two retention sweeps (the first runs at start)."""
RETENTION_CHUNK = 10_000
"""Rows one sweep deletes at most: the writer's batches wait meanwhile; the next chunk follows them."""


@dataclass(frozen=True, slots=True)
class LogState:
    enabled: bool
    backend: str
    up: bool
    written: int
    pending: int
    spooled: int
    dropped: int
    lag_seconds: float
    last_error: str


@dataclass(frozen=True, slots=True)
class Tuning:
    batch_size: int = 500
    flush_seconds: float = 0.25
    max_pending: int = 100_000
    max_pending_bytes: int = 256 << 20
    """Bytes of code held by the rows waiting in memory (proofs of up to 1 MiB each)."""
    timeout: float = 5.0
    retry_seconds: float = 2.0
    retention_days: float | None = None
    migrate: bool = False


class ProofLog:
    def __init__(self, backend: Backend, spool: Spool, origin: Origin, shown: str, tuning: Tuning) -> None:
        self.backend = backend
        self.spool = spool
        self.origin = origin
        self.shown = shown
        self.t = tuning
        self.written = 0
        self.dropped = 0
        self.up = True
        self.last_error = ""
        self._pending: deque[Entry] = deque()
        self._pending_bytes = 0
        self._in_flight: float | None = None  # the oldest answer of the batch being written
        self._wake = asyncio.Event()
        self._closing = False
        self._retry_at = 0.0
        self._loss_logged = False
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- the request path

    def record(self, call: Call, proof: pb.Proof, outcome: Outcome, trust: TrustPolicy | None) -> None:
        """One answered proof. Never blocks, never raises."""
        size = len(proof.code)
        if len(self._pending) >= self.t.max_pending or self._pending_bytes + size > self.t.max_pending_bytes:
            self._lost(1, "the in-memory queue is full (the database and the spool are behind)")
            return
        self._pending_bytes += size
        self._pending.append(Entry(call, proof, outcome, trust, time.time()))
        if len(self._pending) >= self.t.batch_size:
            self._wake.set()

    # ----------------------------------------------------------------- life cycle

    async def start(self) -> None:
        """Reach the database and check its schema (ProofLogError, one line, when either fails), take
        over what an earlier run left in the spool, and start writing."""
        try:
            await asyncio.wait_for(self.backend.connect(), self.t.timeout + 1)
            if self.t.migrate:
                applied = await asyncio.wait_for(self.backend.upgrade(), max(30.0, self.t.timeout))
                if applied:
                    log.info("prooflog_migrated", versions=applied)
            version = await asyncio.wait_for(self.backend.version(), self.t.timeout)
        except TimeoutError:
            raise ProofLogError(f"{VARIABLE}: {self.shown} did not answer within {self.t.timeout:g} s") from None
        except Exception as exc:
            raise ProofLogError(f"{VARIABLE}: cannot use {self.shown}: {one_line(exc)}") from None
        head = schema.head(self.backend.name)
        if version < head:
            await self.backend.close()
            raise ProofLogError(
                f"{VARIABLE}: {self.shown} holds proof-log schema version {version}, this server writes {head}: "
                "run `kimina-grpc db upgrade` (or set LEAN_SERVER_DATABASE_MIGRATE=true)"
            )
        if version > head:
            await self.backend.close()
            raise ProofLogError(
                f"{VARIABLE}: {self.shown} holds proof-log schema version {version}, newer than this server's "
                f"{head}: upgrade kimina-grpc"
            )
        try:
            await asyncio.to_thread(self.spool.open)
        except OSError as exc:
            raise ProofLogError(f"LEAN_SERVER_LOG_SPOOL_DIR: cannot use {self.spool.directory}: {exc}") from None
        if self.spool.rows:
            log.info("prooflog_spool_found", rows=self.spool.rows, directory=str(self.spool.directory))
        self._task = asyncio.create_task(self._run())
        log.info("prooflog_on", database=self.shown, schema=version)

    async def close(self, seconds: float | None = None) -> None:
        """Write what is left (the writer gets `seconds`, default the write timeout and one more); what
        the database does not take is spooled."""
        seconds = self.t.timeout + 1 if seconds is None else seconds
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, seconds)
        while self._pending:
            rows, oldest = self._encode(self._take())
            if not await self._write(rows):
                self._spool(rows, oldest)
        await self.backend.close()
        log.info("prooflog_closed", written=self.written, spooled=self.spool.rows, dropped=self.dropped)

    def state(self) -> LogState:
        waiting = [t for t in (self._in_flight, self.spool.oldest_time()) if t is not None]
        if self._pending:
            waiting.append(self._pending[0].answered_at)
        return LogState(
            enabled=True,
            backend=self.backend.name,
            up=self.up,
            written=self.written,
            pending=len(self._pending),
            spooled=self.spool.rows,
            dropped=self.dropped,
            lag_seconds=max(0.0, time.time() - min(waiting)) if waiting else 0.0,
            last_error=self.last_error,
        )

    # ----------------------------------------------------------------- the writer task

    async def _run(self) -> None:
        next_sweep = 0.0
        while not self._closing:
            if len(self._pending) < self.t.batch_size:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.t.flush_seconds)
            try:
                if self._pending:
                    await self._flush()
                if self.spool.rows and self._may_try() and not self._closing:
                    await self._replay()
                if self.t.retention_days and self.up and time.monotonic() >= next_sweep:
                    more = await self._sweep()
                    next_sweep = time.monotonic() + (0 if more else RETENTION_EVERY)
            except Exception:  # a bug must not stop the log: say it, and go on with the next batch
                log.exception("prooflog_writer_failed")
                await asyncio.sleep(self.t.flush_seconds)

    def _take(self) -> list[Entry]:
        batch = [self._pending.popleft() for _ in range(min(self.t.batch_size, len(self._pending)))]
        self._pending_bytes -= sum(len(e.proof.code) for e in batch)
        return batch

    def _encode(self, batch: list[Entry]) -> tuple[list[dict[str, Any]], float]:
        rows = []
        for entry in batch:
            try:
                rows.append(encode(entry, self.origin))
            except Exception:  # a bug, not the database: lose this row, not the batch
                log.exception("prooflog_encode_failed", proof_id=entry.proof.id)
                self.dropped += 1
        return rows, batch[0].answered_at

    async def _flush(self) -> None:
        batch = self._take()
        self._in_flight = batch[0].answered_at
        encoded: tuple[list[dict[str, Any]], float] | None = None
        try:
            encoded = await asyncio.to_thread(self._encode, batch)  # off the loop: requests go on meanwhile
            if not await self._write(encoded[0]):
                await asyncio.to_thread(self._spool, *encoded)
        except asyncio.CancelledError:  # shutting down mid-write: keep the rows for the next start
            self._spool(*(encoded or self._encode(batch)))  # (spooled twice at worst: the keys dedupe)
            raise
        finally:
            self._in_flight = None

    async def _write(self, rows: list[dict[str, Any]]) -> bool:
        """True when the rows are in the database (or never will be: rejected, counted)."""
        if not rows:
            return True
        if not self._may_try():
            return False
        try:
            written = await asyncio.wait_for(self.backend.write(rows), self.t.timeout)
        except Rejected as exc:
            if len(rows) > 1:  # find the culprit: one bad row must not cost its batch
                return await self._one_by_one(rows)
            self._lost(1, f"the database rejected a row: {exc}")
            return True
        except Exception as exc:
            self._failed(f"no answer within {self.t.timeout:g} s" if isinstance(exc, TimeoutError) else one_line(exc))
            return False
        self.written += written
        if not self.spool.rows and len(self._pending) < self.t.max_pending // 2:
            self._loss_logged = False  # the episode is over: the next loss is said again
        if not self.up:
            self.up = True
            self.last_error = ""
            log.warning("prooflog_database_back", spooled=self.spool.rows)
        return True

    async def _one_by_one(self, rows: list[dict[str, Any]]) -> bool:
        """A rejected batch, row by row: the rows the database takes are written, the others counted."""
        for i, row in enumerate(rows):
            if not await self._write([row]):  # the database went away meanwhile: keep the rest
                await asyncio.to_thread(self._spool, rows[i:], row["answered_at"])
                return True
        return True

    def _spool(self, rows: list[dict[str, Any]], oldest: float) -> None:
        try:
            kept = self.spool.put(rows, oldest)
        except OSError as exc:
            self._lost(len(rows), f"cannot write the spool ({exc})")
            return
        if not kept:
            self._lost(len(rows), f"the spool is full (LEAN_SERVER_LOG_SPOOL_MAX_BYTES={self.spool.max_bytes})")

    async def _replay(self) -> None:
        path = self.spool.oldest()
        if path is None:
            return
        try:
            rows = await asyncio.to_thread(self.spool.read, path)
        except OSError:  # taken by another replica sharing the directory
            await asyncio.to_thread(self.spool.remove, path)
            return
        if await self._write(rows):
            await asyncio.to_thread(self.spool.remove, path)
            if not self.spool.rows:
                log.info("prooflog_spool_written")

    async def _sweep(self) -> bool:
        """One chunk of the rows past LEAN_SERVER_LOG_RETENTION_DAYS; True when more may be left."""
        cutoff = time.time() - 86400 * (self.t.retention_days or 0)
        try:
            deleted = await asyncio.wait_for(
                self.backend.delete_before(cutoff, RETENTION_CHUNK), max(30.0, self.t.timeout)
            )
        except Exception as exc:  # tried again at the next sweep
            log.warning("prooflog_retention_failed", error=one_line(exc) if str(exc) else type(exc).__name__)
            return False
        if deleted:
            log.info("prooflog_retention", deleted=deleted, days=self.t.retention_days)
        return deleted >= RETENTION_CHUNK

    # ----------------------------------------------------------------- bookkeeping

    def _may_try(self) -> bool:
        return self.up or time.monotonic() >= self._retry_at

    def _failed(self, error: str) -> None:
        self._retry_at = time.monotonic() + self.t.retry_seconds
        self.last_error = error
        if self.up:  # once per outage
            self.up = False
            log.warning("prooflog_database_down", error=error, retry_seconds=self.t.retry_seconds)

    def _lost(self, rows: int, why: str) -> None:
        self.dropped += rows
        if not self._loss_logged:  # once, until the spool has drained again
            self._loss_logged = True
            log.error("prooflog_rows_dropped", rows=rows, reason=why)
