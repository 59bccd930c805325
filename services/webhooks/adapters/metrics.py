"""The deliveries the dispatcher still owes and the endpoints' state, read from PostgreSQL
when Prometheus scrapes.

The database is what every dispatcher shares, so these gauges are the same whichever
dispatcher answers, and survive restarts, unlike a process's counters. Two short queries
per scrape (the owed ones through the partial index on PENDING rows) on a one-connection
engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text

from services.core.db.models import WebhookDeliveryState
from services.core.logs import get_logger

log = get_logger(__name__)

OWED_SQL = text(
    "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0), "
    "count(*) FILTER (WHERE next_attempt_at <= now()) "
    "FROM webhook_deliveries WHERE state = :pending"
).bindparams(pending=WebhookDeliveryState.PENDING.value)
ENDPOINTS_SQL = text(
    "SELECT count(*) FILTER (WHERE disabled_at IS NULL), "
    "count(*) FILTER (WHERE disabled_at IS NOT NULL) FROM webhook_endpoints"
)


class OwedDeliveries(Collector):
    """relink_webhook_deliveries_owed{due}, relink_webhook_oldest_owed_seconds,
    relink_webhook_endpoints{state}, relink_webhooks_database_up."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        owed = GaugeMetricFamily(
            "relink_webhook_deliveries_owed",
            "Webhook deliveries not yet accepted nor given up (PENDING), by whether their "
            "next attempt is due now (due=true) or waits in the retry schedule (due=false).",
            labels=["due"],
        )
        oldest = GaugeMetricFamily(
            "relink_webhook_oldest_owed_seconds",
            "Age of the oldest webhook delivery still owed (0: none): the dispatcher's lag.",
        )
        endpoints = GaugeMetricFamily(
            "relink_webhook_endpoints",
            "Webhook endpoints by state (enabled, disabled; from PostgreSQL).",
            labels=["state"],
        )
        up = GaugeMetricFamily(
            "relink_webhooks_database_up", "1 when PostgreSQL answered the last scrape's query."
        )
        try:
            with self.engine.connect() as connection:
                count, age, due = connection.execute(OWED_SQL).one()
                enabled, disabled = connection.execute(ENDPOINTS_SQL).one()
        except Exception as exc:
            log.warning("webhook gauges: PostgreSQL did not answer (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        owed.add_metric(["true"], int(due))
        owed.add_metric(["false"], int(count) - int(due))
        oldest.add_metric([], float(age))
        endpoints.add_metric(["enabled"], int(enabled))
        endpoints.add_metric(["disabled"], int(disabled))
        up.add_metric([], 1)
        yield from (owed, oldest, endpoints, up)

    def describe(self) -> Iterable[Metric]:
        return ()
