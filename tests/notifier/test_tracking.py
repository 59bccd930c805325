"""A redelivered event is recognised by the notifier's tracking record and does nothing
(issue 17: tracking records, modelled on eventsourcing's `Tracking` / `ProcessRecorder`).

Real Kafka, real PostgreSQL, the real consumer loop, a real SMTP server.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import Engine, text

from devtools.smtp_sink.sink import SmtpSink
from services.core import events
from services.core.settings import CommonSettings
from services.notifier.adapters.kafka import audit_topics
from services.notifier.settings import NotifierSettings
from tests.notifier.conftest import (
    make_world,
    produce,
    rows,
    running_notifier,
    settled_event,
    wait_for,
)


def caught_up(settings: CommonSettings, group: str) -> bool:
    """Whether the group has committed every message of the audited topics."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": group})
    try:
        parts = [
            TopicPartition(topic, p)
            for topic in audit_topics(settings)
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        committed = consumer.committed(parts, timeout=10)
        for tp in committed:
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high > 0 and tp.offset < high:
                return False
        return True
    finally:
        consumer.close()


def messages_on(settings: CommonSettings, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "x"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            high - low
            for low, high in (
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in partitions
            )
        )
    finally:
        consumer.close()


def test_an_event_produced_twice_and_reread_after_a_restart_is_handled_once(
    engine: Engine,
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    smtp_sink: SmtpSink,
) -> None:
    world = make_world(engine, sessions_per_student=[1])
    session = world.sessions[0]
    recreated = events.new_event(
        "session.meeting_recreated",
        {
            "tutor_id": str(world.tutor_id),
            "session_id": str(session["id"]),
            "student_id": str(session["student"].id),
            "scheduled_start_at": session["starts"].isoformat(),
            "provider": "google_meet",
            "meeting_external_id": session["meeting"],
            "join_url": session["join_url"],
            "deleted_meeting_external_id": "abc-deleted-000",
            "recreated_at": datetime.now(UTC).isoformat(),
        },
        tutor_id=str(world.tutor_id),
        source="/relink/oauth-gateway",
    )
    settled = settled_event(world)
    # 1. The same two records produced twice (a producer retry, a relay restart).
    produce(settings, [recreated, settled], times=2)
    with running_notifier(notifier_settings):
        wait_for(lambda: len(smtp_sink.mails()) >= 2, what="the student's and the tutor's email")
        wait_for(lambda: caught_up(settings, notifier_settings.group_id), what="all consumed")

    def effects() -> tuple[int, list[tuple[str, int]], list[tuple[str, str]]]:
        audit = rows(engine, "SELECT event_type, count(*) FROM audit_log GROUP BY 1 ORDER BY 1")
        tracked = rows(engine, "SELECT consumer, event_id FROM tracking ORDER BY event_type")
        return (
            len(smtp_sink.mails()),
            [(r[0], r[1]) for r in audit],
            [(r[0], r[1]) for r in tracked],
        )

    expected = (
        2,
        [("session.meeting_recreated", 1), ("switch.settled", 1)],
        [("notifier", recreated.id), ("notifier", settled.id)],
    )
    assert effects() == expected
    subjects = sorted(m.subject for m in smtp_sink.mails())
    assert any("1 of 1 sessions moved" in s for s in subjects), subjects

    # Meanwhile the session's meeting is re-created once more: the first event no
    # longer matches the database, but it was handled when it did.
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE sessions SET meeting_external_id = 'abc-newer-001', "
                "join_url = 'https://meet.google.com/abc-newer-001' WHERE id = :id"
            ),
            {"id": session["id"]},
        )

    # 2. A notifier that restarts before its offsets were committed: it re-reads every
    # event (a new group), and recognises each one: no email, no audit row, no dead letter.
    restarted = notifier_settings.model_copy(
        update={"group_id": f"{notifier_settings.group_id}-restarted-{uuid.uuid4().hex[:6]}"}
    )
    with running_notifier(restarted):
        wait_for(lambda: caught_up(settings, restarted.group_id), what="all re-read")
    assert effects() == expected
    assert messages_on(settings, settings.topic_dead_letter) == 0
