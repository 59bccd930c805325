"""Issue 17's design: a switch's settlement is an event, and a redelivered event does nothing.

Real parts: the relay, Kafka, `relink migrator` processes, the simulator over
HTTP, the notifier sending to an SMTP sink, and the gateway's own store for
the tutor's requests (retry, rollback).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy import Engine, text
from sqlalchemy.orm import sessionmaker

from devtools.smtp_sink.sink import SmtpSink
from services.core.kafka import producer_config
from services.core.settings import CommonSettings
from services.oauth_gateway.adapters.db import GatewayStore
from tests.migrator.conftest import migration_rows, read_topic, settled, switch_row, wait_for
from tests.migrator.factory import Factory
from tests.migrator.test_rollback import outbox_events, request_rollback


def audited(engine: Engine, event_type: str, switch_id: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT event_id, outcome FROM audit_log WHERE event_type = :t "
                    "AND switch_id = :s ORDER BY event_time"
                ),
                {"t": event_type, "s": switch_id},
            )
        )


def summaries(mail: SmtpSink) -> list[Any]:
    return [m for m in mail.mails() if "Your switch to" in m.subject]


async def test_completion_and_rollback_each_commit_a_switch_settled_the_notifier_acts_on(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    tutor_mail: SmtpSink,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=3, provider="zoom")
    await factory.real_meetings(tutor, sessions, provider="zoom")
    start_migrator()
    switch_id = factory.switch(tutor, to_provider="google_meet")
    assert wait_for(lambda: settled(engine, switch_id), what="switch settles").state == "COMPLETED"

    # The settlement committed with its event: one switch.settled, the switch as it settled.
    (completed,) = outbox_events(engine, "switch.settled", switch_id)
    assert {k: v for k, v in completed.items() if k != "settled_at"} == {
        "switch_id": str(switch_id),
        "tutor_id": str(tutor.id),
        "state": "COMPLETED",
        "from_provider": "zoom",
        "to_provider": "google_meet",
        "sessions_total": 3,
        "sessions_migrated": 3,
        "sessions_failed": 0,
        "sessions_skipped": 0,
    }
    wait_for(lambda: summaries(tutor_mail), what="the tutor's summary")
    (summary,) = summaries(tutor_mail)
    assert "3 of 3 sessions moved" in summary.subject

    request_rollback(engine, settings, tutor=tutor, switch=switch_id)
    wait_for(lambda: switch_row(engine, switch_id).state == "ROLLED_BACK", what="rolled back")
    states = [e["state"] for e in outbox_events(engine, "switch.settled", switch_id)]
    assert sorted(states) == ["COMPLETED", "ROLLED_BACK"]

    # The notifier audits both settlements and sends the rollback summary; no second
    # switch summary, none claiming moves for the rollback.
    wait_for(lambda: len(audited(engine, "switch.settled", switch_id)) == 2, what="audited")
    wait_for(
        lambda: any("back on Zoom" in m.subject for m in tutor_mail.mails()),
        what="the rollback summary",
    )
    assert len(summaries(tutor_mail)) == 1
    outcomes = [r.outcome for r in audited(engine, "switch.settled", switch_id)]
    assert outcomes[0] == "settled: completed, 3 of 3 moved, 0 failed, 0 skipped"
    assert outcomes[1].startswith("settled: rolled_back")


async def test_a_switch_whose_sessions_all_fail_settles_with_failures_and_says_so(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    tutor_mail: SmtpSink,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=2, provider="zoom")
    await factory.real_meetings(tutor, sessions, provider="zoom")
    await sim_admin.faults("google_meet", tutor.email, error_rate=1.0)
    start_migrator()
    switch_id = factory.switch(tutor, to_provider="google_meet")
    row = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert row.state == "COMPLETED_WITH_FAILURES"

    (failed,) = outbox_events(engine, "switch.settled", switch_id)
    assert (failed["state"], failed["sessions_migrated"], failed["sessions_failed"]) == (
        "COMPLETED_WITH_FAILURES",
        0,
        2,
    )
    wait_for(lambda: summaries(tutor_mail), what="the tutor's summary")
    (summary,) = summaries(tutor_mail)
    assert "0 of 2 sessions moved, 2 need attention" in summary.subject
    assert "have been emailed" not in summary.body()
    assert {m.rcpt_to for m in tutor_mail.mails()} == {(tutor.email,)}  # no student told


def committed_offset(settings: CommonSettings, group: str, topic: str, partition: int) -> int:
    """The offset a consumer group has committed on one partition (-1001: none yet)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": group})
    try:
        (found,) = consumer.committed([TopicPartition(topic, partition)], timeout=10)
        return int(found.offset)
    finally:
        consumer.close()


def produce_again(settings: CommonSettings, record: Any) -> int:
    """Produce a record read from a topic once more, byte for byte; its new offset."""
    delivered: list[int] = []
    producer = Producer(producer_config(settings))
    producer.produce(
        settings.topic_provider_switched,
        key=record.key.encode(),
        value=record.value,
        headers=list(record.headers),
        partition=record.partition,
        on_delivery=lambda err, msg: delivered.append(msg.offset() or 0) if err is None else None,
    )
    assert producer.flush(30) == 0 and delivered
    return delivered[0]


async def test_a_redelivered_retry_request_retries_nothing_a_second_time(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
) -> None:
    """The tutor's "retry failed" reaches the migrator twice (produced twice, then re-read by a
    consumer that restarts without the offsets committed): the failed session is retried once.
    Before tracking records, each delivery put the row back in the queue: another provider
    call, another `session.failed`."""
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=1, provider="zoom")
    await factory.real_meetings(tutor, sessions, provider="zoom")
    await sim_admin.faults("google_meet", tutor.email, error_rate=1.0)
    migrator = start_migrator()
    switch_id = factory.switch(tutor, to_provider="google_meet")
    wait_for(lambda: settled(engine, switch_id), what="the switch settles with its failure")
    assert len(outbox_events(engine, "session.failed", switch_id)) == 1

    store = GatewayStore(sessionmaker(engine), cipher=settings.token_cipher(), topics=settings)
    retry_id, _ = store.request_retry(tutor_id=tutor.id, switch_id=switch_id, now=datetime.now(UTC))
    wait_for(
        lambda: (
            len(outbox_events(engine, "session.failed", switch_id)) == 2
            and settled(engine, switch_id)
        ),
        what="the retry fails again and the switch settles again",
    )
    (row,) = migration_rows(engine, switch_id)
    topic = settings.topic_provider_switched
    (request,) = [
        r
        for r in read_topic(
            settings.kafka_bootstrap_servers,
            topic,
            until=lambda got: any(r.event.id == str(retry_id) for r in got),
        )
        if r.event.id == str(retry_id)
    ]

    # 1. The same record produced again, to the same partition.
    again = produce_again(settings, request)
    group = f"{settings.topic_prefix}relink-migrator"
    wait_for(
        lambda: committed_offset(settings, group, topic, request.partition) > again,
        what="the migrator to consume the repeated request",
    )
    assert migration_rows(engine, switch_id)[0].updated_at == row.updated_at  # not queued again

    # 2. A migrator that restarts before its offsets were committed: a new group re-reads all.
    migrator.stop()
    fresh = f"{group}-restarted-{uuid.uuid4().hex[:6]}"
    start_migrator(RELINK_MIGRATOR_APP_ID=fresh)
    wait_for(
        lambda: committed_offset(settings, fresh, topic, request.partition) > again,
        what="the restarted migrator to re-read the requests",
    )
    (after,) = migration_rows(engine, switch_id)
    assert (after.updated_at, after.state, after.attempts) == (
        row.updated_at,
        row.state,
        row.attempts,
    )
    assert len(outbox_events(engine, "session.failed", switch_id)) == 2
    with engine.connect() as conn:
        tracked = conn.execute(
            text("SELECT consumer, event_type, kafka_offset FROM tracking WHERE event_id = :id"),
            {"id": str(retry_id)},
        ).all()
    # one record of the request, where it was first read
    assert [(t.consumer, t.event_type, t.kafka_offset) for t in tracked] == [
        ("migrator", "session.retry_requested", request.offset)
    ]
