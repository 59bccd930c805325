"""A real Prometheus scrapes the four relink processes through a switch (issue 20).

The gateway, relay, migrator and notifier run as `relink run` starts them (the
e2e fixtures' ProcessStack), each with its /metrics; Debian's Prometheus scrapes
them every second with deploy/'s alert rules loaded. Checked with PromQL over
its HTTP API against what PostgreSQL says: the sessions migrated, the switches by
state, the events the relay published, the outbox lag (0 when all is published;
the age and count of the rows waiting while Kafka is away), the consumer groups'
lag, the emails sent and the provider calls' latency histogram.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from devtools.soak.run import SoakDriver, SoakTally, Tutor
from devtools.soak.stack import ProcessStack
from services.core.db.errors import StoreError
from services.core.db.models import SwitchState
from tests.ops.prometheus import DEPLOY, Prometheus

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class
    from tests.conftest import TestInfrastructure

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SESSIONS = 4
PROCESSES = ("gateway", "relay", "migrator", "notifier")
T = TypeVar("T")


@pytest.fixture
def stack(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> Iterator[ProcessStack]:
    stack = ProcessStack(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        workdir=tmp_path / "stack",
        extra_env={
            "RELINK_MIGRATOR_POLL_INTERVAL_S": "0.2",
            # the outbox figures every half second, and retries soon after Kafka is back
            "RELINK_RELAY_METRICS_INTERVAL_S": "0.5",
            "RELINK_RELAY_BACKOFF_MAX_S": "2",
        },
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def prometheus(stack: ProcessStack, tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(
        tmp_path / "prometheus",
        stack.ports.metrics_targets(),
        rules=[DEPLOY / "prometheus" / "alerts.yml"],
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


def wait_for(check: Callable[[], T | None], *, what: str, timeout_s: float = 120.0) -> T:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            found = check()
        except (DBAPIError, StoreError, httpx.HTTPError, AssertionError) as exc:
            found, last = None, exc
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def one_row(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).one()


def book(driver: SoakDriver, tutor: Tutor) -> None:
    with httpx.Client(
        base_url=driver.stack.gateway_url,
        headers={"authorization": f"Bearer {tutor.token}"},
        timeout=30,
    ) as http:
        for n, student in enumerate(tutor.students):
            answer = http.post(
                "/api/bookings",
                json={
                    "student_id": str(student),
                    "topic": f"Metrics lesson {n}",
                    "scheduled_start_at": (datetime.now(UTC) + timedelta(days=2 + n)).isoformat(),
                    "duration_minutes": 45,
                    "timezone": "UTC",
                },
            )
            assert answer.status_code == 201, answer.text


def test_prometheus_scrapes_the_four_processes_through_a_switch(
    devstack: TestInfrastructure,
    engine: Engine,
    stack: ProcessStack,
    prometheus: Prometheus,
    topic_prefix: str,
) -> None:
    # Every process is up for Prometheus and says what it is.
    def all_up() -> bool:
        up = {
            r["metric"]["process"]: r["value"][1] for r in prometheus.query('up{job=~"relink-.*"}')
        }
        return up == dict.fromkeys(PROCESSES, "1")

    wait_for(all_up, what="Prometheus to scrape all four processes", timeout_s=60)
    built = {r["metric"]["process"] for r in prometheus.query("relink_build_info == 1")}
    assert built == set(PROCESSES)
    # deploy/'s rules load in the real server
    groups = prometheus.get("/api/v1/rules")["groups"]
    assert {rule["name"] for g in groups for rule in g["rules"]} >= {
        "RelinkProcessDown",
        "RelinkOutboxLagTooOld",
    }

    driver = SoakDriver(stack, engine, SoakTally(), random.Random(20))
    tutor = driver.make_tutor(20, students=SESSIONS)
    driver.connect(tutor, "zoom")
    book(driver, tutor)
    switch_id = driver.connect(tutor, "google_meet")
    assert switch_id is not None
    wait_for(
        lambda: (
            one_row(
                engine,
                "SELECT coalesce(p.state, 'PENDING') FROM switch_requests r "
                "LEFT JOIN provider_switches p ON p.id = r.id WHERE r.id = :i",
                i=switch_id,
            )[0]
            == SwitchState.COMPLETED
        ),
        what="the switch to complete",
    )
    migrated = one_row(
        engine,
        "SELECT count(*) FROM session_migrations WHERE switch_id = :i AND state = 'MIGRATED'",
        i=switch_id,
    )[0]
    assert migrated == SESSIONS

    # The migrated count, from the migrator's counter and from PostgreSQL's gauges.
    wait_for(
        lambda: prometheus.value("sum(relink_sessions_migrated_total)") == SESSIONS,
        what="relink_sessions_migrated_total to say 4",
    )
    assert prometheus.value('relink_sessions_migrated_total{provider="google_meet"}') == SESSIONS
    wait_for(
        lambda: prometheus.value('relink_session_migrations{state="MIGRATED"}') == SESSIONS,
        what="relink_session_migrations{state=MIGRATED}",
    )
    assert prometheus.value('relink_switches{state="COMPLETED"}') == 1
    assert prometheus.value('relink_switches_settled_total{state="COMPLETED"}') == 1
    assert prometheus.value("relink_switch_oldest_in_flight_seconds") == 0
    # A Google insert per session, timed by provider, operation and status.
    inserts = prometheus.value(
        'sum(relink_provider_request_seconds_count{provider="google_meet",'
        'operation="insert event",status="200"})'
    )
    assert inserts is not None and inserts >= SESSIONS

    # Outbox: all published, so no lag; the relay's count is PostgreSQL's.
    published = one_row(engine, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")[0]
    assert published > 0
    wait_for(
        lambda: (
            prometheus.value("relink_relay_published_total") == published
            and prometheus.value("relink_relay_outbox_backlog") == 0
            and prometheus.value("relink_relay_oldest_unpublished_age_seconds") == 0
        ),
        what="the relay's figures to match the outbox",
    )

    # The consumer groups caught up, partition by partition.
    notifier_group = f"{topic_prefix}relink-notifier"
    migrator_group = f"{topic_prefix}relink-migrator"
    for group in (notifier_group, migrator_group):
        wait_for(
            lambda g=group: (
                (
                    rows := prometheus.query(f'relink_kafka_consumer_lag{{group="{g}"}}')  # type: ignore[misc]
                )
                and all(r["value"][1] == "0" for r in rows)
            ),
            what=f"{group}'s lag to be 0",
        )
    emails = wait_for(
        lambda: prometheus.value('sum(relink_notifier_emails_total{outcome="sent"})'),
        what="the notifier's emails sent",
    )
    sent = one_row(engine, "SELECT count(*) FROM notifications WHERE state = 'SENT'")[0]
    assert emails == sent

    # Every panel of the dashboard is PromQL this Prometheus evaluates.
    dashboard = json.loads((DEPLOY / "grafana" / "relink.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            prometheus.query(target["expr"])

    # Kafka away: a switch back to Zoom waits in the outbox, and its lag shows.
    devstack.stop_kafka()
    try:
        before = time.monotonic()
        driver.connect(tutor, "zoom")
        waiting = one_row(engine, "SELECT count(*) FROM outbox WHERE published_at IS NULL")[0]
        assert waiting >= 1

        def lag_shows() -> float | None:
            backlog = prometheus.value("relink_relay_outbox_backlog")
            age = prometheus.value("relink_relay_oldest_unpublished_age_seconds")
            return age if backlog == waiting and age is not None and age >= 3 else None

        age = wait_for(lag_shows, what="the outbox lag to show the waiting rows")
        assert age <= time.monotonic() - before + 1
    finally:
        devstack.start_kafka()
    wait_for(
        lambda: (
            prometheus.value("relink_relay_outbox_backlog") == 0
            and prometheus.value("relink_relay_oldest_unpublished_age_seconds") == 0
        ),
        what="the outbox lag to go back to 0 once Kafka is back",
        timeout_s=180,
    )
