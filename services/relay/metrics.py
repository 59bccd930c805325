"""The relay's figures, their prometheus_client collector and the `/metrics` endpoint.

The endpoint is services.core.metrics' small HTTP server in a daemon thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from services.core.metrics import render
from services.core.metrics import serve_metrics as serve


@dataclass
class RelayMetrics:
    """Counters the loop updates and the endpoint and the log line read."""

    published_total: int = 0
    publish_errors_total: int = 0
    batches_total: int = 0
    backlog: int = 0
    oldest_unpublished_age_s: float = 0.0
    kafka_available: bool = True
    database_available: bool = True
    slots_held: int = 0
    started_at: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last_total: int = 0
    _last_at: float = field(default_factory=time.monotonic)

    def add_batch(self, *, published: int, failed: int) -> None:
        with self._lock:
            self.batches_total += 1
            self.published_total += published
            self.publish_errors_total += failed

    def set_backlog(self, *, rows: int, oldest_age_s: float) -> None:
        with self._lock:
            self.backlog = rows
            self.oldest_unpublished_age_s = oldest_age_s

    def rate_since_last(self, *, now: float | None = None) -> float:
        """Events published per second since the previous call."""
        now = time.monotonic() if now is None else now
        with self._lock:
            elapsed = max(now - self._last_at, 1e-9)
            rate = (self.published_total - self._last_total) / elapsed
            self._last_total, self._last_at = self.published_total, now
        return rate

    def render(self) -> bytes:
        """Prometheus text exposition format 0.0.4: these figures and the process-wide series."""
        return render(RelayCollector(self))

    def summary(self) -> str:
        """One log line with the same figures."""
        return (
            f"backlog={self.backlog} oldest_age_s={self.oldest_unpublished_age_s:.1f} "
            f"published_per_s={self.rate_since_last():.0f} published_total={self.published_total} "
            f"publish_errors_total={self.publish_errors_total} "
            f"kafka_up={int(self.kafka_available)} "
            f"db_up={int(self.database_available)} slots={self.slots_held}"
        )


class RelayCollector(Collector):
    """The loop's figures as prometheus_client metric families, read at scrape time."""

    def __init__(self, metrics: RelayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        f = self.metrics
        with f._lock:
            yield CounterMetricFamily(
                "relink_relay_published", "Events acknowledged by Kafka.", value=f.published_total
            )
            yield CounterMetricFamily(
                "relink_relay_publish_errors",
                "Events Kafka did not acknowledge (retried).",
                value=f.publish_errors_total,
            )
            yield CounterMetricFamily(
                "relink_relay_batches", "Batches claimed and settled.", value=f.batches_total
            )
            yield GaugeMetricFamily(
                "relink_relay_outbox_backlog", "Unpublished outbox rows (all tutors).", f.backlog
            )
            yield GaugeMetricFamily(
                "relink_relay_oldest_unpublished_age_seconds",
                "Outbox lag: age of the oldest unpublished row (0 when none waits).",
                f.oldest_unpublished_age_s,
            )
            yield GaugeMetricFamily(
                "relink_relay_kafka_up",
                "1 when the last batch was acknowledged.",
                int(f.kafka_available),
            )
            yield GaugeMetricFamily(
                "relink_relay_database_up",
                "1 when PostgreSQL answered last time.",
                int(f.database_available),
            )
            yield GaugeMetricFamily(
                "relink_relay_slots_held", "Tutor slots this relay leases.", f.slots_held
            )

    def describe(self) -> Iterable[Metric]:
        return ()


def serve_metrics(metrics: RelayMetrics, *, host: str, port: int) -> ThreadingHTTPServer:
    """Start serving `GET /metrics`; return the server (call `.shutdown()` to stop)."""
    return serve(metrics.render, host=host, port=port, name="relay")
