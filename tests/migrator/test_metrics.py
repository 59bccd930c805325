"""The migrator's /metrics (issue 20): a real `relink migrator` against the simulator,
scraped over HTTP, says what PostgreSQL, the simulator and the topics say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from devtools.soak.stack import free_port
from services.core.kafka import producer_config
from services.core.settings import CommonSettings
from tests.migrator.conftest import migration_rows, read_topic, settled, wait_for
from tests.migrator.factory import Factory


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    ]


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when none)."""
    return sum(
        value
        for sample, have, value in samples
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )


async def test_rate_limits_latency_and_migrations_are_counted(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    factory.sessions(tutor, count=5, provider="google_meet")
    await sim_admin.faults("zoom", tutor.email, burst_429=3, retry_after_s=1)
    port = free_port()
    start_migrator(RELINK_MIGRATOR_METRICS_PORT=str(port))
    switch_id = factory.switch(tutor, to_provider="zoom")
    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert (switch.state, switch.sessions_migrated) == ("COMPLETED", 5)
    account = await sim_admin.account("zoom", tutor.email)

    m = wait_for(
        lambda: (s := scrape(port)) and total(s, "relink_switches_settled_total") and s,
        what="the settled switch counted",
    )
    assert total(m, "relink_build_info", process="migrator") == 1
    assert total(m, "relink_sessions_migrated_total", provider="zoom") == 5
    assert total(m, "relink_switches_settled_total", state="COMPLETED") == 1
    assert total(m, "relink_switches", state="COMPLETED") == 1
    assert total(m, "relink_session_migrations", state="MIGRATED") == 5
    assert total(m, "relink_switch_oldest_in_flight_seconds") == 0
    # the three 429s of the burst, counted and timed; every create timed by status
    assert total(m, "relink_provider_rate_limited_total", provider="zoom") == 3
    assert total(m, "relink_provider_request_seconds_count", provider="zoom", status="429") == 3
    creates = total(
        m,
        "relink_provider_request_seconds_count",
        provider="zoom",
        operation="create meeting",
        status="201",
    )
    assert creates == account["create_calls"] == 5
    assert total(m, "relink_provider_waits_total", provider="zoom", kind="rate_limit") >= 1
    assert total(m, "relink_provider_waits_total", kind="daily_budget") == 0

    # the Faust group's lag, per partition, read from Kafka (0 once Faust has committed)
    def caught_up() -> bool:
        lag = [s for s in scrape(port) if s[0] == "relink_kafka_consumer_lag"]
        return bool(lag) and all(s[2] == 0 for s in lag)

    wait_for(caught_up, what="the migrator group's lag at 0")


async def test_daily_budget_waits_and_sessions_by_state_are_counted(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    factory.sessions(tutor, count=6, provider="google_meet")
    await sim_admin.faults("zoom", tutor.email, daily_quota=4)
    port = free_port()
    start_migrator(RELINK_MIGRATOR_TUTOR_CONCURRENCY="1", RELINK_MIGRATOR_METRICS_PORT=str(port))
    switch_id = factory.switch(tutor, to_provider="zoom")

    def waiting_for_reset() -> bool:
        pending = [m for m in migration_rows(engine, switch_id) if m.state == "PENDING"]
        return len(pending) == 2 and all(
            m.next_attempt_at > datetime.now(UTC) + timedelta(minutes=1) for m in pending
        )

    wait_for(waiting_for_reset, what="the rest rescheduled for the quota reset")
    m = scrape(port)
    assert total(m, "relink_provider_waits_total", provider="zoom", kind="daily_budget") >= 1
    assert total(m, "relink_sessions_migrated_total", provider="zoom") == 4
    assert total(m, "relink_session_migrations", state="MIGRATED") == 4
    assert total(m, "relink_session_migrations", state="PENDING") == 2
    assert total(m, "relink_switches", state="MIGRATING") == 1
    assert total(m, "relink_switch_oldest_in_flight_seconds") > 0
    assert total(m, "relink_switches_settled_total") == 0


async def test_failures_by_reason_and_dead_letters_are_counted(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    factory.sessions(tutor, count=4, provider="google_meet")
    producer = Producer(producer_config(settings))
    producer.produce(settings.topic_provider_switched, key=str(tutor.id).encode(), value=b"{oops")
    assert producer.flush(10) == 0
    switch_id = factory.switch(tutor, to_provider="zoom")
    await sim_admin.revoke("zoom", tutor.email)
    port = free_port()
    start_migrator(RELINK_MIGRATOR_METRICS_PORT=str(port))
    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert (switch.state, switch.sessions_failed) == ("COMPLETED_WITH_FAILURES", 4)
    dead = read_topic(
        settings.kafka_bootstrap_servers, settings.topic_dead_letter, until=lambda g: len(g) >= 1
    )
    assert dict(dead[0].headers)["dlq_reason"] == b"not_cloudevent"

    m = wait_for(
        lambda: (s := scrape(port)) and total(s, "relink_switches_settled_total") and s,
        what="the settled switch counted",
    )
    assert total(m, "relink_sessions_failed_total", reason="reconnect_required") == 4
    assert total(m, "relink_sessions_failed_total") == 4
    assert total(m, "relink_sessions_migrated_total") == 0
    assert total(m, "relink_session_migrations", state="FAILED") == 4
    assert total(m, "relink_switches_settled_total", state="COMPLETED_WITH_FAILURES") == 1
    assert total(m, "relink_dead_letters_total", process="migrator", reason="not_cloudevent") == 1
    assert total(m, "relink_dead_letters_total") == 1
