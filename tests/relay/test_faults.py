"""The relay under faults: SIGKILL between ack and mark, Kafka down, PostgreSQL restart."""

from __future__ import annotations

import signal
from collections import Counter

from sqlalchemy import Engine

from services.core.settings import CommonSettings
from services.relay.usecases import CRASH_EXIT_CODE
from tests.conftest import TestInfrastructure as Infrastructure
from tests.relay.conftest import (
    assert_per_tutor_order,
    ids_of,
    read_topic,
    relay_settings,
    relay_subprocess,
    running_relay,
    unpublished,
    wait_for,
    write_rows,
)


def test_a_relay_killed_between_ack_and_mark_repeats_events_but_loses_none(
    engine: Engine, settings: CommonSettings, relink_env: dict[str, str]
) -> None:
    rows = write_rows(engine, settings, [f"tutor-{i}" for i in range(5)], per_tutor=20)

    # fault-injection hook: the process os._exit()s once Kafka acknowledged
    # its first batch, before the rows are marked published
    crashing = relay_subprocess(
        relink_env, RELINK_RELAY_CRASH_AFTER_PUBLISH="1", RELINK_RELAY_BATCH_SIZE="40"
    )
    assert crashing.wait(timeout=60) == CRASH_EXIT_CODE
    assert unpublished(engine) == len(rows)
    first_run = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_provider_switched,
        until=lambda got: len(got) >= 40,
    )
    assert len(first_run) == 40

    relay = relay_subprocess(relink_env)
    try:
        wait_for(lambda: unpublished(engine) == 0, what="the restarted relay to catch up")
    finally:
        relay.send_signal(signal.SIGKILL)
        relay.wait(timeout=30)

    received = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_provider_switched,
        until=lambda got: len(got) >= len(rows) + 40,
    )
    counts = Counter(ids_of(received))
    assert set(counts) == {str(r["event_id"]) for r in rows}  # no loss
    repeated = {event_id for event_id, n in counts.items() if n > 1}
    assert repeated == set(ids_of(first_run))  # the repeats are the unmarked batch, same ids
    assert_per_tutor_order(received)


def test_rows_written_while_kafka_is_down_arrive_once_it_is_back(
    devstack: Infrastructure, engine: Engine, settings: CommonSettings
) -> None:
    before = write_rows(engine, settings, ["tutor-a", "tutor-b"], per_tutor=3)
    with running_relay(relay_settings(settings, RELINK_RELAY_DELIVERY_TIMEOUT_S=2.0)) as relay:
        wait_for(lambda: unpublished(engine) == 0, what="rows before the outage")
        devstack.stop_kafka()
        try:
            during = write_rows(
                engine, settings, ["tutor-a", "tutor-b", "tutor-c"], per_tutor=4, first=10
            )
            wait_for(lambda: not relay.metrics.kafka_available, what="the relay to notice")
            assert unpublished(engine) == len(during)
            assert relay.metrics.publish_errors_total > 0
        finally:
            devstack.start_kafka()
        wait_for(lambda: unpublished(engine) == 0, timeout_s=90, what="rows after the outage")
        assert relay.metrics.kafka_available

    received = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_provider_switched,
        until=lambda got: (
            {m.event.id for m in got} >= {str(r["event_id"]) for r in before + during}
        ),
    )
    assert_per_tutor_order(received)


def test_the_relay_reconnects_after_postgresql_restarts(
    devstack: Infrastructure, engine: Engine, settings: CommonSettings
) -> None:
    before = write_rows(engine, settings, ["tutor-a"], per_tutor=3)
    with running_relay(relay_settings(settings)) as relay:
        wait_for(lambda: unpublished(engine) == 0, what="rows before the restart")
        devstack.restart_postgres()
        after = write_rows(engine, settings, ["tutor-a"], per_tutor=3, first=10)
        wait_for(lambda: unpublished(engine) == 0, what="rows after the restart")
        assert relay.metrics.database_available

    received = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_provider_switched,
        until=lambda got: {m.event.id for m in got} >= {str(r["event_id"]) for r in before + after},
    )
    assert len(received) == len(before) + len(after)
