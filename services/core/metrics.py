"""Every Prometheus series relink's processes export, defined once (prometheus_client).

One naming convention: `relink_<area>_<what>[_unit]`, counters ending in
`_total`. Each process imports this module and updates the series that are its
own; the others simply stay empty there. The README's "Operating relink" says
what each one means; deploy/ holds the alert rules and the Grafana dashboard
over them (a test checks the dashboard names only series defined here).

`serve_metrics` starts the small `/metrics` endpoint of the relay, the migrator,
the notifier and the webhook dispatcher (the gateway serves `/metrics` on its
own port). Under the gateway's uvicorn workers, PROMETHEUS_MULTIPROC_DIR is set
by `relink gateway` before any worker imports this module, and `render` merges
every worker's files.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from services.core.errors import ConfigurationError
from services.core.logs import get_logger

log = get_logger(__name__)

# No `<counter>_created` series: twice the lines for a start time nobody graphs.
disable_created_metrics()  # type: ignore[no-untyped-call]

# The text format the endpoints answer in (what Prometheus 2.x scrapes by default).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: the callback spends most of its time on two provider round trips.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds: one provider HTTP call (the simulators answer in milliseconds, the real ones in 100s).
PROVIDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# -- every process -------------------------------------------------------------

BUILD_INFO = Gauge(
    "relink_build_info",
    "1 for each running relink process, labelled with its name and relink's version.",
    ["process", "version"],
    multiprocess_mode="max",
)

# -- gateway: its series are per app (services/oauth_gateway/metrics.py) -----------

# -- providers (gateway and migrator) -------------------------------------------

PROVIDER_REQUEST_SECONDS = Histogram(
    "relink_provider_request_seconds",
    "One HTTP call to a provider, by provider, operation and status "
    "(the HTTP status, or `transport_error` when no answer came).",
    ["provider", "operation", "status"],
    buckets=PROVIDER_BUCKETS,
)
PROVIDER_RATE_LIMITED = Counter(
    "relink_provider_rate_limited",
    "Provider answers 429 (rate limited), by provider and operation.",
    ["provider", "operation"],
)
PROVIDER_WAITS = Counter(
    "relink_provider_waits",
    "Migrations put off by a provider limit, by provider and kind "
    "(rate_limit: a Retry-After or 429; daily_budget: a per-day cap spent, waits until it resets).",
    ["provider", "kind"],
)

# -- migrator ------------------------------------------------------------------

SWITCHES_SETTLED = Counter(
    "relink_switches_settled",
    "Switches this migrator settled, by final state (COMPLETED, COMPLETED_WITH_FAILURES, ...).",
    ["state"],
)
SESSIONS_MIGRATED = Counter(
    "relink_sessions_migrated",
    "Sessions moved to their tutor's new provider (new meeting recorded), by new provider.",
    ["provider"],
)
SESSIONS_FAILED = Counter(
    "relink_sessions_failed",
    "Sessions given up on (they keep their old meeting), by reason code.",
    ["reason"],
)

# -- relay (its collector reads the loop's own figures: services/relay/metrics.py) --

# -- notifier ------------------------------------------------------------------

EMAILS = Counter(
    "relink_notifier_emails",
    "Emails handed to SMTP, by kind and outcome (sent: accepted on the first attempt; "
    "resent: accepted after earlier attempts failed; failed: refused for good; "
    "retrying: a transient failure, tried again later).",
    ["kind", "outcome"],
)

# -- webhooks (the dispatcher; its owed deliveries: services/webhooks/adapters/metrics.py) --

WEBHOOK_DELIVERIES = Counter(
    "relink_webhook_deliveries",
    "Webhook deliveries settled by this dispatcher, by outcome (delivered: the endpoint "
    "answered 2xx; failed: every attempt of the retry schedule failed).",
    ["outcome"],
)
WEBHOOK_ATTEMPTS = Counter(
    "relink_webhook_attempts",
    "Webhook POSTs, by status (the HTTP status; transport_error: no answer; "
    "no_key: not sent, the endpoint's secret does not decrypt).",
    ["status"],
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "relink_webhook_attempt_seconds",
    "One webhook POST (connect, send, answer), by whether it was accepted (ok: 2xx).",
    ["ok"],
    buckets=PROVIDER_BUCKETS,
)
WEBHOOK_DELIVERY_SECONDS = Histogram(
    "relink_webhook_delivery_seconds",
    "From an event's time to its webhook being accepted (2xx): what the platform waits, "
    "retries included.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 36000.0),
)
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "relink_webhook_endpoints_disabled",
    "Endpoints this dispatcher disabled after failing too long (RELINK_WEBHOOKS_DISABLE_AFTER_*).",
)

# -- consumers (migrator, notifier and webhooks) -----------------------------------

DEAD_LETTERS = Counter(
    "relink_dead_letters",
    "Records sent to the dead-letter topic, by consuming process and reason code.",
    ["process", "reason"],
)

CONSUMER_LAG = "relink_kafka_consumer_lag"
CONSUMER_LAG_HELP = (
    "Records not yet committed by a consumer group: the partition's high watermark "
    "minus the group's committed offset, by group, topic and partition."
)
CONSUMER_LAG_UP = "relink_kafka_consumer_lag_up"


def relink_version() -> str:
    try:
        return version("relink")
    except PackageNotFoundError:
        return "unknown"


def process_started(process: str) -> None:
    """Mark this process as a running relink `process` (the gateway, relay, ...)."""
    BUILD_INFO.labels(process=process, version=relink_version()).set(1)


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR: set, every series lives in files the workers share."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render(*collectors: Collector) -> bytes:
    """The text exposition of the default registry (or every worker's files) plus `collectors`."""
    registry = CollectorRegistry(auto_describe=True)
    folder = multiprocess_dir()
    if folder:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Default())
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)


class _Default(Collector):
    """The process-wide default registry, as one collector of a per-scrape registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()

    def describe(self) -> Iterable[Metric]:
        return ()


def serve_metrics(
    page: Callable[[], bytes], *, host: str, port: int, name: str
) -> ThreadingHTTPServer:
    """Serve `GET /metrics` (the bytes `page` returns) from a daemon thread.

    Port 0 picks a free port (`server.server_address[1]`). Call `.shutdown()` to stop.
    """

    class MetricsRequest(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            try:
                body = page()
            except Exception:
                log.exception("rendering /metrics failed")
                self.send_error(500)
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # scrapes every few seconds would drown the process's own log
            return

    try:
        server = ThreadingHTTPServer((host, port), MetricsRequest)
    except OSError as exc:
        raise ConfigurationError(
            f"relink {name} cannot serve /metrics on {host}:{port} ({exc.strerror}): set "
            f"RELINK_{name.upper()}_METRICS_PORT to a free port, or to 0 for no endpoint"
        ) from exc
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"{name}-metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
    return server


class ConsumerLag(Collector):
    """`relink_kafka_consumer_lag{group,topic,partition}`, read from Kafka at scrape time.

    The group's committed offsets against each partition's high watermark, through
    a consumer that joins no group (it only reads the group's commits), so it works
    for the notifier's confluent-kafka group and the migrator's Faust one alike.
    While Kafka does not answer, `relink_kafka_consumer_lag_up` is 0 and no lag is given.
    """

    def __init__(
        self, config: dict[str, Any], *, group: str, topics: list[str], timeout_s: float = 5.0
    ) -> None:
        self.config = config
        self.group = group
        self.topics = topics
        self.timeout_s = timeout_s
        self._consumer: Any = None
        self._lock = threading.Lock()

    def _client(self) -> Any:
        if self._consumer is None:
            from confluent_kafka import Consumer

            self._consumer = Consumer(
                {**self.config, "group.id": self.group, "enable.auto.commit": False}
            )
        return self._consumer

    def lags(self) -> list[tuple[str, int, int]]:
        """(topic, partition, lag) of every partition of the topics."""
        from confluent_kafka import TopicPartition

        with self._lock:
            consumer = self._client()
            partitions: list[Any] = []
            for topic in self.topics:
                found = consumer.list_topics(topic, timeout=self.timeout_s).topics.get(topic)
                if found is None or found.error is not None:
                    continue
                partitions += [TopicPartition(topic, p) for p in sorted(found.partitions)]
            if not partitions:
                return []
            committed = consumer.committed(partitions, timeout=self.timeout_s)
            out = []
            for tp in committed:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=self.timeout_s, cached=False
                )
                # No commit yet: everything from the start of the log is owed.
                position = tp.offset if tp.offset >= 0 else low
                out.append((tp.topic, tp.partition, max(0, high - position)))
            return out

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(
            CONSUMER_LAG_UP,
            "1 when Kafka answered the last lag query of this group.",
            labels=["group"],
        )
        lag = GaugeMetricFamily(
            CONSUMER_LAG, CONSUMER_LAG_HELP, labels=["group", "topic", "partition"]
        )
        try:
            rows = self.lags()
        except Exception as exc:
            log.warning("consumer lag of %s: Kafka did not answer (%s)", self.group, exc)
            up.add_metric([self.group], 0)
        else:
            up.add_metric([self.group], 1)
            for topic, partition, behind in rows:
                lag.add_metric([self.group, topic, str(partition)], behind)
        yield lag
        yield up

    def describe(self) -> Iterable[Metric]:
        return ()

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
