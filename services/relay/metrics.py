"""The relay's figures, their Prometheus text rendering and the `/metrics` endpoint.

The endpoint is a tiny stdlib HTTP server in a daemon thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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

    def render(self) -> str:
        """Prometheus text exposition format, version 0.0.4."""
        with self._lock:
            rows = [
                (
                    "relink_relay_published_total",
                    "counter",
                    "Events acknowledged by Kafka.",
                    self.published_total,
                ),
                (
                    "relink_relay_publish_errors_total",
                    "counter",
                    "Events Kafka did not acknowledge (retried).",
                    self.publish_errors_total,
                ),
                (
                    "relink_relay_batches_total",
                    "counter",
                    "Batches claimed and settled.",
                    self.batches_total,
                ),
                (
                    "relink_relay_outbox_backlog",
                    "gauge",
                    "Unpublished outbox rows (all tutors).",
                    self.backlog,
                ),
                (
                    "relink_relay_oldest_unpublished_age_seconds",
                    "gauge",
                    "Age of the oldest unpublished row.",
                    self.oldest_unpublished_age_s,
                ),
                (
                    "relink_relay_kafka_up",
                    "gauge",
                    "1 when the last batch was acknowledged.",
                    int(self.kafka_available),
                ),
                (
                    "relink_relay_database_up",
                    "gauge",
                    "1 when PostgreSQL answered last time.",
                    int(self.database_available),
                ),
                (
                    "relink_relay_slots_held",
                    "gauge",
                    "Tutor slots this relay leases.",
                    self.slots_held,
                ),
            ]
        lines: list[str] = []
        for name, kind, help_text, value in rows:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        """One log line with the same figures."""
        return (
            f"backlog={self.backlog} oldest_age_s={self.oldest_unpublished_age_s:.1f} "
            f"published_per_s={self.rate_since_last():.0f} published_total={self.published_total} "
            f"publish_errors_total={self.publish_errors_total} "
            f"kafka_up={int(self.kafka_available)} "
            f"db_up={int(self.database_available)} slots={self.slots_held}"
        )


def serve_metrics(metrics: RelayMetrics, *, host: str, port: int) -> ThreadingHTTPServer:
    """Start serving `GET /metrics`; return the server (call `.shutdown()` to stop)."""

    class MetricsRequest(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # scrapes every few seconds would drown the relay's own log
            return

    server = ThreadingHTTPServer((host, port), MetricsRequest)
    threading.Thread(target=server.serve_forever, name="relay-metrics", daemon=True).start()
    return server
