"""Redelivery, crashes, partial failure and retry, supersession: one meeting per session."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from services.core import events
from services.core.db.models import Outbox
from services.core.kafka import producer_config
from services.core.settings import CommonSettings
from tests.migrator.conftest import (
    migration_rows,
    read_topic,
    session_rows,
    settled,
    switch_row,
    wait_for,
)
from tests.migrator.factory import Factory, Tutor


def publish_copies(engine: Engine, settings: CommonSettings, switch_id: uuid.UUID, n: int) -> None:
    """Produce the switch's outbox row `n` times, as a relay that crashed before marking would."""
    with engine.connect() as conn:
        row = (
            conn.execute(
                text("SELECT * FROM outbox WHERE payload->>'switch_id' = :id"),
                {"id": str(switch_id)},
            )
            .mappings()
            .one()
        )
    message = events.outbox_message(
        event_id=row["event_id"],
        event_type=row["event_type"],
        aggregate_id=row["aggregate_id"],
        payload=row["payload"],
        headers=row["headers"],
    )
    producer = Producer(producer_config(settings))
    for _ in range(n):
        producer.produce(
            row["topic"],
            key=message.key,
            value=message.value,
            headers=list(message.headers.items()),
        )
    assert producer.flush(10) == 0


def committed_everything(settings: CommonSettings, group: str) -> bool:
    """The migrator's group has committed the end of every partition of the switch topic."""
    topic = settings.topic_provider_switched
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        for tp in committed:
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high > 0 and tp.offset < high:
                return False
        return True
    finally:
        consumer.close()


async def meetings_of(sim_admin: Any, provider: str, tutor: Tutor) -> list[dict[str, Any]]:
    account = await sim_admin.account(provider, tutor.email)
    return list(account["meetings"])


async def test_redelivered_three_times_and_killed_mid_plan(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=24)
    await sim_admin.faults("google_meet", tutor.email, latency_ms=150)
    switch_id = factory.switch(tutor, to_provider="google_meet")
    # No relay: the same message three times, as redelivery after crashes would give.
    publish_copies(engine, settings, switch_id, 3)

    small = {"RELINK_MIGRATOR_PLAN_BATCH_SIZE": "4", "RELINK_MIGRATOR_TUTOR_CONCURRENCY": "2"}
    first = start_migrator(**small)
    wait_for(
        lambda: any(m.state == "MIGRATED" for m in migration_rows(engine, switch_id)),
        what="the first session migrated",
        every=0.05,
    )
    first.kill()
    assert switch_row(engine, switch_id).sessions_migrated < 24

    start_migrator(**small)
    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert (switch.state, switch.sessions_migrated, switch.sessions_total) == ("COMPLETED", 24, 24)
    app_id = f"{settings.topic_prefix}relink-migrator"
    wait_for(lambda: committed_everything(settings, app_id), what="all three copies consumed")

    live = await meetings_of(sim_admin, "google_meet", tutor)
    rows = session_rows(engine, sessions)
    assert len(live) == 24
    assert {m["id"] for m in live} == {r.meeting_external_id for r in rows}
    assert len(migration_rows(engine, switch_id)) == 24


async def test_redelivery_to_zoom_creates_no_second_meeting(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=6, provider="google_meet")
    switch_id = factory.switch(tutor, to_provider="zoom")
    publish_copies(engine, settings, switch_id, 3)
    start_migrator()
    wait_for(lambda: settled(engine, switch_id), what="switch settles")
    app_id = f"{settings.topic_prefix}relink-migrator"
    wait_for(lambda: committed_everything(settings, app_id), what="all three copies consumed")
    account = await sim_admin.account("zoom", tutor.email)
    assert account["create_calls"] == 6
    assert {str(m["id"]) for m in account["meetings"]} == {
        r.meeting_external_id for r in session_rows(engine, sessions)
    }


def request_retry(
    engine: Engine, settings: CommonSettings, tutor: Tutor, switch_id: uuid.UUID
) -> None:
    """What the gateway's "retry failed" action commits."""
    with Session(engine) as db, db.begin():
        db.execute(
            insert(Outbox).values(
                **events.outbox_row(
                    "session.retry_requested",
                    {
                        "switch_id": str(switch_id),
                        "tutor_id": str(tutor.id),
                        "session_ids": [],
                        "requested_at": datetime.now(UTC).isoformat(),
                    },
                    tutor_id=str(tutor.id),
                    source="/relink/tests/gateway-factory",
                    topics=settings,
                )
            )
        )


async def test_partial_failure_then_retry_moves_all(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
) -> None:
    await sim_admin.http.post("/_admin/reset")  # a fresh seeded random sequence
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=10, provider="google_meet")
    await sim_admin.faults("zoom", tutor.email, error_rate=0.2)
    # One attempt per session, one at a time: the seeded simulator fails the same ones each run.
    start_migrator(
        RELINK_MIGRATOR_MAX_ATTEMPTS="1",
        RELINK_PROVIDER_MAX_ATTEMPTS="1",
        RELINK_MIGRATOR_TUTOR_CONCURRENCY="1",
    )
    switch_id = factory.switch(tutor, to_provider="zoom")

    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert switch.state == "COMPLETED_WITH_FAILURES"
    assert (switch.sessions_migrated, switch.sessions_failed) == (8, 2)
    failed = [m for m in migration_rows(engine, switch_id) if m.state == "FAILED"]
    assert all(m.retryable and m.last_error.startswith("provider_error") for m in failed)
    reported = read_topic(
        settings.kafka_bootstrap_servers, settings.topic_session_failed, until=lambda g: len(g) >= 2
    )
    assert {m.event.data["session_id"] for m in reported} == {str(m.session_id) for m in failed}
    assert all(m.event.data["reason"] == "provider_error" for m in reported)

    await sim_admin.faults("zoom", tutor.email, error_rate=0.0)
    request_retry(engine, settings, tutor, switch_id)
    wait_for(lambda: switch_row(engine, switch_id).state == "COMPLETED", what="retry completes")
    assert all(r.provider == "zoom" for r in session_rows(engine, sessions))
    retried = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_session_migrated,
        until=lambda g: len(g) >= 10,
    )
    assert sorted(m.event.data["kind"] for m in retried).count("retry") == 2
    account = await sim_admin.account("zoom", tutor.email)
    assert len(account["meetings"]) == 10


async def test_zoom_meet_zoom_supersedes_the_middle_switch(
    engine: Engine,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=12)
    await sim_admin.faults("google_meet", tutor.email, latency_ms=150)
    start_migrator(RELINK_MIGRATOR_TUTOR_CONCURRENCY="2")
    to_meet = factory.switch(tutor, to_provider="google_meet")
    wait_for(
        lambda: any(m.state == "MIGRATED" for m in migration_rows(engine, to_meet)),
        what="the middle switch under way",
        every=0.05,
    )
    back_to_zoom = factory.switch(tutor, to_provider="zoom")

    last = wait_for(lambda: settled(engine, back_to_zoom), what="last switch settles")
    assert last.state == "COMPLETED"
    middle = wait_for(lambda: settled(engine, to_meet), what="middle switch superseded")
    assert middle.state == "SUPERSEDED"
    rows = session_rows(engine, sessions)
    assert all(r.provider == "zoom" for r in rows)
    zoom = await meetings_of(sim_admin, "zoom", tutor)
    moved_back = [m for m in migration_rows(engine, back_to_zoom) if m.state == "MIGRATED"]
    # Sessions the middle switch had moved came back with a new Zoom meeting each; the
    # others never left their original meeting.
    assert len(moved_back) == middle.sessions_migrated > 0
    assert {str(m["id"]) for m in zoom} == {m.new_meeting_external_id for m in moved_back}
    assert not [
        m for m in migration_rows(engine, to_meet) if m.state in ("PENDING", "MEETING_CREATED")
    ]
