"""The contract end to end on the real broker: the example consumer, dead letters, no secrets."""

from __future__ import annotations

import copy
import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from services.core import events
from services.core.db.models import Outbox
from services.core.settings import CommonSettings
from tests.relay.conftest import (
    Received,
    read_topic,
    relay_settings,
    running_relay,
    unpublished,
    wait_for,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "downstream_consumer.py"
# Token values a leaky producer would copy from a connection row.
KNOWN_TEST_TOKENS = ["ya29.test-access-token-relink", "1//test-refresh-token-relink"]


def migrated(tutor_id: str, session_id: str, join_url: str) -> dict[str, Any]:
    payload: dict[str, Any] = copy.deepcopy(events.load_schema("session.migrated")["examples"][0])
    payload |= {"tutor_id": tutor_id, "session_id": session_id, "join_url": join_url}
    payload["switch_id"] = str(uuid.uuid4())
    return payload


def write_outbox(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with Session(engine) as session, session.begin():
        session.execute(insert(Outbox), rows)


def test_example_consumer_dedups_dead_letters_and_keeps_going(
    engine: Engine, settings: CommonSettings, tmp_path: Path
) -> None:
    topic = settings.topic_session_migrated
    first = events.outbox_row(
        "session.migrated",
        migrated("tutor-1", "s-1", "https://meet.google.com/aaa-bbbb-ccc"),
        tutor_id="tutor-1",
        source="/relink/migrator",
        topics=settings,
    )
    write_outbox(engine, [first])
    with running_relay(relay_settings(settings)):
        wait_for(lambda: unpublished(engine) == 0, what="first event")

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    # a redelivery of the same event (same source and id), then garbage, then a good one
    again = events.outbox_message(
        event_id=first["event_id"],
        event_type=first["event_type"],
        aggregate_id=first["aggregate_id"],
        payload=first["payload"],
        headers=first["headers"],
    )
    producer.produce(topic, key=again.key, value=again.value, headers=list(again.headers.items()))
    producer.produce(topic, key=b"tutor-1", value=b"{definitely not json", headers=[("x", b"1")])
    producer.flush(10)
    second = events.outbox_row(
        "session.migrated",
        migrated("tutor-1", "s-2", "https://meet.google.com/ddd-eeee-fff"),
        tutor_id="tutor-1",
        source="/relink/migrator",
        topics=settings,
    )
    write_outbox(engine, [second])
    with running_relay(relay_settings(settings)):
        wait_for(lambda: unpublished(engine) == 0, what="second event")

    db = tmp_path / "downstream.sqlite3"
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--bootstrap", settings.kafka_bootstrap_servers,
            "--topic", topic,
            "--group", f"calendar-sync-{uuid.uuid4().hex[:6]}",
            "--db", str(db),
            "--dead-letter-topic", settings.topic_dead_letter,
            "--exit-when-idle", "3",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )  # fmt: skip
    assert "applied=2 duplicate=1 dead-lettered=1" in result.stdout

    with sqlite3.connect(db) as store:
        links = dict(store.execute("SELECT session_id, join_url FROM session_links").fetchall())
    assert links == {
        "s-1": "https://meet.google.com/aaa-bbbb-ccc",
        "s-2": "https://meet.google.com/ddd-eeee-fff",
    }

    dead = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_dead_letter,
        until=lambda got: len(got) >= 1,
    )
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert dead[0].value == b"{definitely not json"
    assert dead[0].key == "tutor-1"
    assert headers["dlq_reason"] == b"not_cloudevent"
    assert headers["dlq_original_topic"] == topic.encode()
    assert headers["x"] == b"1"
    assert {"dlq_original_partition", "dlq_original_offset"} <= set(headers)


def test_no_produced_event_carries_a_secret(engine: Engine, settings: CommonSettings) -> None:
    rows = []
    for event_type in events.EventType:
        payload: dict[str, Any] = copy.deepcopy(events.load_schema(event_type)["examples"][0])
        rows.append(
            events.outbox_row(
                event_type, payload, tutor_id="tutor-42", source="/relink/test", topics=settings
            )
        )
        # a producer that tries to smuggle a token in is refused before the outbox
        leaky = payload | {"access_token": KNOWN_TEST_TOKENS[0]}
        try:
            events.outbox_row(
                event_type, leaky, tutor_id="tutor-42", source="/relink/test", topics=settings
            )
        except events.InvalidEvent as exc:
            assert exc.reason == "schema_violation"
        else:
            raise AssertionError(f"{event_type} accepted a token")
    write_outbox(engine, rows)
    with running_relay(relay_settings(settings)):
        wait_for(lambda: unpublished(engine) == 0, what="every event type published")

    received = []
    for topic in {row["topic"] for row in rows}:
        expected = sum(1 for row in rows if row["topic"] == topic)

        def enough(got: list[Received], n: int = expected) -> bool:
            return len(got) >= n

        received += read_topic(settings.kafka_bootstrap_servers, topic, until=enough)
    assert len(received) == len(rows)
    for message in received:
        raw = message.value + b"".join(name.encode() + value for name, value in message.headers)
        for token in KNOWN_TEST_TOKENS:
            assert token.encode() not in raw
        names = [name for name, _ in message.headers] + list(json.loads(message.value))
        assert not [n for n in names if events.SECRET_NAME.search(n)], names
