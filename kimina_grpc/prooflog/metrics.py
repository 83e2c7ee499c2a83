"""The log's Prometheus metrics, read at scrape time from the writer's counters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from kimina_grpc.prooflog.writer import ProofLog


class ProofLogCollector(Collector):
    def __init__(self, prooflog: ProofLog) -> None:
        self.prooflog = prooflog

    def collect(self) -> Iterator[Any]:
        s = self.prooflog.state()
        yield CounterMetricFamily(
            "kimina_prooflog_rows_written", "Rows written to the proof log's database.", value=s.written
        )
        yield CounterMetricFamily(
            "kimina_prooflog_rows_dropped",
            "Rows lost: the spool or the in-memory queue was full, or the database rejected them.",
            value=s.dropped,
        )
        yield GaugeMetricFamily("kimina_prooflog_rows_pending", "Rows waiting in memory for a batch.", value=s.pending)
        yield GaugeMetricFamily(
            "kimina_prooflog_rows_spooled", "Rows waiting in the local spool for the database.", value=s.spooled
        )
        yield GaugeMetricFamily(
            "kimina_prooflog_lag_seconds", "Age of the oldest row not yet in the database.", value=s.lag_seconds
        )
        yield GaugeMetricFamily("kimina_prooflog_up", "1 while the last write reached the database.", value=int(s.up))
