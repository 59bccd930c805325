"""The audit trail: one row per event, dead letters for the rest, replay and verify."""

from __future__ import annotations

import subprocess
import sys
import uuid

from confluent_kafka import Consumer
from sqlalchemy import Engine

from devtools.smtp_sink.sink import SmtpSink
from services.core import events
from services.core.kafka import consumer_config
from services.core.settings import CommonSettings
from services.notifier.settings import NotifierSettings
from tests.notifier.conftest import (
    failed_event,
    make_world,
    migrated_event,
    produce,
    produce_raw,
    rows,
    running_notifier,
    switched_event,
    wait_for,
)

AUDIT_COLUMNS = (
    "event_id, event_source, event_type, event_time, tutor_id, switch_id, session_id,"
    " from_provider, to_provider, outcome, payload, kafka_topic, kafka_partition, kafka_offset"
)


def relink(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def read_all(settings: CommonSettings, topic: str, *, expect: int) -> list[object]:
    consumer = Consumer(consumer_config(settings, group_id=f"t-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic])
    found: list[object] = []

    def enough() -> bool:
        found.extend(m for m in consumer.consume(10, 0.5) if not m.error())
        return len(found) >= expect

    try:
        wait_for(enough, what=f"{expect} message(s) on {topic}")
    finally:
        consumer.close()
    return found


def test_malformed_message_goes_to_dead_letter_topic_and_the_rest_is_processed(
    engine: Engine,
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    smtp_sink: SmtpSink,
) -> None:
    world = make_world(engine, sessions_per_student=[1], switch_state="MIGRATING")
    tutor = str(world.tutor_id).encode()
    produce_raw(
        settings,
        settings.topic_session_migrated,
        key=tutor,
        value=b"{not json",
        headers=[
            ("ce_specversion", b"1.0"),
            ("ce_id", b"x"),
            ("ce_source", b"/evil"),
            ("ce_type", b"session.migrated"),
            ("ce_time", b"2031-01-01T00:00:00Z"),
        ],
    )
    produce(settings, [migrated_event(world, world.sessions[0])])

    with running_notifier(notifier_settings):
        wait_for(lambda: len(smtp_sink.mails()) >= 1, what="the valid event's email")
        (letter,) = read_all(settings, settings.topic_dead_letter, expect=1)

    headers = dict(letter.headers())  # type: ignore[attr-defined]
    assert letter.value() == b"{not json"  # type: ignore[attr-defined]
    assert headers[events.DLQ_REASON] == b"bad_payload"
    assert headers[events.DLQ_ORIGINAL_TOPIC] == settings.topic_session_migrated.encode()
    assert rows(engine, "SELECT count(*) FROM audit_log")[0][0] == 1


def test_replay_rebuilds_the_same_rows_and_verify_finds_a_removed_one(
    engine: Engine,
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    env: dict[str, str],
    smtp_sink: SmtpSink,
) -> None:
    world = make_world(engine, sessions_per_student=[2, 1], failed=1)
    batch = [
        switched_event(world),
        *(migrated_event(world, s) for s in world.sessions[:2]),
        failed_event(world, world.sessions[2]),
    ]
    produce(settings, batch, times=2)  # the repeats are the same events
    with running_notifier(notifier_settings):
        wait_for(lambda: len(smtp_sink.mails()) >= 2, what="the two students' emails")
        wait_for(lambda: rows(engine, "SELECT count(*) FROM audit_log")[0][0] == 4, what="audit")
    live = rows(engine, f"SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY event_id")
    assert {r.event_type for r in live} == {
        "provider.switched",
        "session.migrated",
        "session.failed",
    }

    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE audit_log")
    replayed = relink(env, "audit", "replay")
    assert replayed.returncode == 0, replayed.stderr
    assert "4 audit rows inserted" in replayed.stdout
    assert rows(engine, f"SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY event_id") == live

    later = relink(env, "audit", "replay", "--since", "2100-01-01T00:00:00Z")
    assert "replayed 0 messages" in later.stdout, later.stderr
    again = relink(env, "audit", "replay", "--since", "2000-01-01T00:00:00Z")
    assert "0 audit rows inserted" in again.stdout  # idempotent
    assert relink(env, "audit", "replay", "--verify").returncode == 0

    removed = next(r.event_id for r in live if r.event_type == "session.migrated")
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM audit_log WHERE event_id = '{removed}'")
        conn.exec_driver_sql(
            "UPDATE audit_log SET outcome = 'tampered' WHERE event_type = 'session.failed'"
        )
    verified = relink(env, "audit", "replay", "--verify")
    assert verified.returncode == 1
    assert f"missing  {removed}" in verified.stdout
    assert "outcome: topics 'failed: quota_exceeded'" in verified.stdout
    assert "1 missing, 0 extra, 1 different" in verified.stdout

    shown = relink(env, "audit", "show", "--tutor", str(world.tutor_id))
    assert shown.returncode == 0, shown.stderr
    assert "session.migrated" in shown.stdout and "Zoom → Google Meet" in shown.stdout
