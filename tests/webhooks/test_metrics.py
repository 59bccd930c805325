"""`relink webhooks` exposes Prometheus /metrics like the other processes (issue 20).

The dispatcher runs as a real process with RELINK_WEBHOOKS_METRICS_PORT; a real
Prometheus (Debian's, deploy/'s rules loaded) scrapes it as job relink-webhooks
while it delivers a switch's events to a real receiver that refuses one of them
for good. Checked with PromQL against what PostgreSQL says: deliveries by
outcome, attempts by status, the attempt and delivery latency histograms, the
deliveries still owed, the endpoints, and the group's consumer lag.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from services.core.settings import CommonSettings
from tests.notifier.conftest import produce
from tests.ops.prometheus import DEPLOY, Prometheus
from tests.webhooks.conftest import (
    Receiver,
    register,
    rows,
    start_dispatcher,
    stop,
    wait_for,
    webhooks_env,
)
from tests.webhooks.test_delivery import msg, switch_events

pytestmark = pytest.mark.timeout(300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def metrics_port() -> int:
    return _free_port()


@pytest.fixture
def prometheus(metrics_port: int, tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(
        tmp_path / "prometheus",
        {"webhooks": f"127.0.0.1:{metrics_port}"},
        rules=[DEPLOY / "prometheus" / "alerts.yml"],
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_prometheus_scrapes_the_dispatchers_deliveries_attempts_and_lag(
    engine: Engine,
    settings: CommonSettings,
    relink_env: dict[str, str],
    receiver: Receiver,
    metrics_port: int,
    prometheus: Prometheus,
    tmp_path: Path,
) -> None:
    env = webhooks_env(
        relink_env,
        RELINK_WEBHOOKS_RETRY_SCHEDULE_S="0.2",  # two attempts, then failed for good
        RELINK_WEBHOOKS_METRICS_PORT=str(metrics_port),
    )
    register(env, receiver, "--name", "platform")
    batch = switch_events(engine)
    refused = msg(batch[1])
    receiver.plan = lambda message_id, _n: (500, 0.0) if message_id == refused else (200, 0.0)
    produce(settings, batch)
    dispatcher = start_dispatcher(env, tmp_path / "webhooks.log")
    try:
        # what PostgreSQL says happened: all but one delivered, that one failed for good
        def settled() -> dict[str, int] | None:
            states = dict(
                (r[0], r[1])
                for r in rows(
                    engine, "SELECT state, count(*) FROM webhook_deliveries GROUP BY state"
                )
            )
            return states if states == {"DELIVERED": len(batch) - 1, "FAILED": 1} else None

        wait_for(settled, what="every delivery settled")

        group = env["RELINK_WEBHOOKS_GROUP_ID"]
        for promql, expected in (
            ('up{job="relink-webhooks"}', 1),
            ('relink_build_info{process="webhooks"}', 1),
            ('sum(relink_webhook_deliveries_total{outcome="delivered"})', len(batch) - 1),
            ('sum(relink_webhook_deliveries_total{outcome="failed"})', 1),
            ('sum(relink_webhook_attempts_total{status="500"})', 2),
            ('sum(relink_webhook_attempts_total{status="200"})', len(batch) - 1),
            ('sum(relink_webhook_attempt_seconds_count{ok="false"})', 2),
            ("sum(relink_webhook_attempt_seconds_count)", len(batch) + 1),
            ("sum(relink_webhook_delivery_seconds_count)", len(batch) - 1),
            ("sum(relink_webhook_deliveries_owed)", 0),
            ("relink_webhook_oldest_owed_seconds", 0),
            ('relink_webhook_endpoints{state="enabled"}', 1),
            ('relink_webhook_endpoints{state="disabled"}', 0),
            ("relink_webhooks_database_up", 1),
            (f'sum(relink_kafka_consumer_lag{{group="{group}"}})', 0),
            (f'relink_kafka_consumer_lag_up{{group="{group}"}}', 1),
        ):

            def scraped(promql: str = promql, expected: float = expected) -> bool:
                return prometheus.value(promql) == expected

            wait_for(scraped, timeout=60, what=f"{promql} == {expected}")
        # the attempts' series agree with the attempts PostgreSQL recorded
        recorded = rows(engine, "SELECT count(*) FROM webhook_attempts")[0][0]
        assert prometheus.value("sum(relink_webhook_attempts_total)") == recorded
        # the dashboard's webhook panels are PromQL that finds these series
        dashboard = json.loads((DEPLOY / "grafana" / "relink.json").read_text())
        webhook_queries = [
            target["expr"]
            for panel in dashboard["panels"]
            for target in panel["targets"]
            if "relink_webhook" in target["expr"] and "rate(" not in target["expr"]
        ]
        assert len(webhook_queries) >= 3
        for promql in webhook_queries:
            assert prometheus.query(promql), promql
    finally:
        stop(dispatcher)
