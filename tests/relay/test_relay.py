"""The relay against real PostgreSQL and Kafka: order, no loss, commit-order gap."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import psycopg
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from services.core.db.engine import libpq_conninfo
from services.core.db.models import Outbox
from services.core.settings import CommonSettings
from tests.relay.conftest import (
    assert_per_tutor_order,
    ids_of,
    outbox_values,
    read_topic,
    relay_settings,
    running_relay,
    unpublished,
    wait_for,
    write_rows,
)


def test_rows_of_one_transaction_arrive_once_each_in_order_with_valid_envelopes(
    engine: Engine, settings: CommonSettings
) -> None:
    tutors = [f"tutor-{i}" for i in range(7)]
    rows = write_rows(engine, settings, tutors, per_tutor=30)

    with running_relay(relay_settings(settings, RELINK_RELAY_BATCH_SIZE=50)):
        received = read_topic(
            settings.kafka_bootstrap_servers,
            settings.topic_provider_switched,
            until=lambda got: len(got) >= len(rows),
        )
        wait_for(lambda: unpublished(engine) == 0, what="rows marked published")

    assert sorted(ids_of(received)) == sorted(str(r["event_id"]) for r in rows)
    assert len(set(ids_of(received))) == len(received)  # once each
    for message in received:
        event = message.event  # parses and validates the envelope and payload
        assert message.key == event.tutor_id
        headers = dict(message.headers)
        assert headers["content-type"] == b"application/json"
        assert headers["ce_source"] == b"/relink/tests"
    assert_per_tutor_order(received)
    # one tutor, one partition
    partitions: dict[str, set[int]] = {}
    for message in received:
        partitions.setdefault(message.key, set()).add(message.partition)
    assert all(len(p) == 1 for p in partitions.values())


def test_a_row_committed_late_with_a_lower_id_is_still_published(
    engine: Engine, settings: CommonSettings
) -> None:
    """The commit-order gap: T1 takes id n, T2 takes n+1 and commits first."""
    conninfo = libpq_conninfo(settings.database_url)
    early = outbox_values(settings, "tutor-late", 1)
    late = outbox_values(settings, "tutor-early", 1)

    with running_relay(relay_settings(settings)):
        with psycopg.connect(conninfo) as first, psycopg.connect(conninfo) as second:
            first_id = _insert(first, early)
            second_id = _insert(second, late)
            assert first_id < second_id
            second.commit()
            # the relay publishes the higher id while the lower one is in flight
            received = read_topic(
                settings.kafka_bootstrap_servers,
                settings.topic_provider_switched,
                until=lambda got: len(got) >= 1,
            )
            assert ids_of(received) == [str(late["event_id"])]
            wait_for(lambda: unpublished(engine) == 0, what="the early commit marked")
            first.commit()

        received = read_topic(
            settings.kafka_bootstrap_servers,
            settings.topic_provider_switched,
            until=lambda got: len(got) >= 2,
        )
        wait_for(lambda: unpublished(engine) == 0, what="the late commit marked")
    assert sorted(ids_of(received)) == sorted([str(early["event_id"]), str(late["event_id"])])


def _insert(conn: psycopg.Connection[Any], values: dict[str, Any]) -> int:
    row = conn.execute(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic,"
        " payload, headers) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            values["event_id"],
            values["aggregate_type"],
            values["aggregate_id"],
            values["event_type"],
            values["topic"],
            psycopg.types.json.Jsonb(values["payload"]),
            psycopg.types.json.Jsonb(values["headers"]),
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_two_relays_share_the_tutors_and_keep_each_tutors_order(
    engine: Engine, settings: CommonSettings
) -> None:
    tutors = [f"tutor-{i}" for i in range(40)]
    stop_writing = threading.Event()
    written: list[dict[str, Any]] = []

    def writer() -> None:
        # tutors' rows keep arriving while both relays run
        n = 0
        while not stop_writing.is_set() and n < 20:
            n += 1
            written.extend(write_rows_for(engine, settings, tutors, n))

    with (
        running_relay(
            relay_settings(
                settings,
                RELINK_RELAY_INSTANCE=0,
                RELINK_RELAY_INSTANCES=2,
                RELINK_RELAY_BATCH_SIZE=37,
            )
        ) as first,
        running_relay(
            relay_settings(
                settings,
                RELINK_RELAY_INSTANCE=1,
                RELINK_RELAY_INSTANCES=2,
                RELINK_RELAY_BATCH_SIZE=37,
            )
        ) as second,
    ):
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join(timeout=60)
        stop_writing.set()
        received = read_topic(
            settings.kafka_bootstrap_servers,
            settings.topic_provider_switched,
            until=lambda got: len({m.event.id for m in got}) >= len(written),
        )
        wait_for(lambda: unpublished(engine) == 0, what="every row marked")
        assert first.metrics.published_total > 0
        assert second.metrics.published_total > 0

    assert {m.event.id for m in received} == {str(r["event_id"]) for r in written}
    assert_per_tutor_order(received)


def write_rows_for(
    engine: Engine, settings: CommonSettings, tutors: list[str], n: int
) -> list[dict[str, Any]]:
    rows = [outbox_values(settings, t, n) for t in tutors]
    with Session(engine) as session, session.begin():
        session.execute(insert(Outbox), rows)
    return rows


def test_a_twin_relay_waits_for_the_slots_instead_of_sharing_them(
    engine: Engine, settings: CommonSettings
) -> None:
    rows = write_rows(engine, settings, ["tutor-a", "tutor-b"], per_tutor=5)
    with running_relay(relay_settings(settings)) as first:
        wait_for(lambda: unpublished(engine) == 0, what="the first relay to publish")
        with running_relay(relay_settings(settings)) as twin:
            more = write_rows(engine, settings, ["tutor-a", "tutor-b"], per_tutor=5, first=10)
            wait_for(lambda: unpublished(engine) == 0, what="the second batch")
            wait_for(lambda: twin.metrics.slots_held == 0 and first.metrics.slots_held == 64)
            assert twin.metrics.published_total == 0
    received = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_provider_switched,
        until=lambda got: len(got) >= len(rows) + len(more),
    )
    assert Counter(ids_of(received)).most_common(1)[0][1] == 1


def test_published_rows_are_deleted_after_the_retention(
    engine: Engine, settings: CommonSettings
) -> None:
    write_rows(engine, settings, ["tutor-a"], per_tutor=3)
    with engine.begin() as conn:
        conn.execute(text("UPDATE outbox SET published_at = now() - interval '2 hours'"))
    write_rows(engine, settings, ["tutor-b"], per_tutor=2)
    with running_relay(relay_settings(settings, RELINK_RELAY_RETENTION_HOURS=1)):
        wait_for(lambda: unpublished(engine) == 0, what="new rows published")
        wait_for(lambda: _count(engine) == 2, what="old rows deleted")


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM outbox")).scalar_one())
