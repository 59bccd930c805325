"""The contract end to end on the real broker: the standalone downstream consumer
(in its own venv without relink, against the devstack's Kafka and PostgreSQL),
dead letters, tolerant reading, no secrets."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from services.core import events
from services.core.db.models import Outbox
from services.core.settings import CommonSettings, normalize_database_url
from tests.gateway.test_hardening import served
from tests.relay.conftest import (
    Received,
    read_topic,
    relay_settings,
    running_relay,
    unpublished,
    wait_for,
)

__all__ = ["served"]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "downstream"
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
# The example's own venv, WITHOUT relink, cached per requirements file so reruns are quick.
VENV_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "downstream-venv"
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


@pytest.fixture(scope="session")
def downstream_python() -> Path:
    """`python -m venv` + `pip install -r examples/downstream/requirements.txt`; no relink in it."""
    requirements = EXAMPLE / "requirements.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    venv = VENV_CACHE / digest
    python = venv / "bin" / "python"
    ready = venv / ".installed"
    if not ready.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
            check=True,
            timeout=900,
        )
        ready.touch()
    lone = subprocess.run(
        [str(python), "-c", "import services"], capture_output=True, text=True, cwd="/"
    )
    assert "No module named 'services'" in lone.stderr  # relink is not in it
    return python


def _raw(producer: Producer, topic: str, event: events.Event) -> None:
    message = events.to_message(event)
    producer.produce(
        topic, key=message.key, value=message.value, headers=list(message.headers.items())
    )


def _links(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass('downstream.session_links')").fetchone()
        if exists is None or exists[0] is None:
            return {}
        return dict(conn.execute("SELECT session_id, join_url FROM downstream.session_links"))


def _connected(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'relink-downstream'"
                " AND datname = current_database()"
            )
        ]


def test_the_standalone_consumer_in_its_own_venv_applies_relayed_events_once(
    engine: Engine,
    settings: CommonSettings,
    database_url: str,
    downstream_python: Path,
    tmp_path: Path,
) -> None:
    topic = settings.topic_session_migrated
    dsn = normalize_database_url(database_url).replace("postgresql+psycopg", "postgresql")
    # a copy of the folder, as a downstream team has it: no relink checkout around it
    folder = tmp_path / "downstream"
    shutil.copytree(EXAMPLE, folder)
    shutil.copytree(SCHEMAS, folder / "schemas")
    out = (tmp_path / "consumer.log").open("w+")
    consumer = subprocess.Popen(
        [
            str(downstream_python), "consumer.py",
            "--bootstrap", settings.kafka_bootstrap_servers,
            "--topic", topic,
            "--group", f"calendar-sync-{uuid.uuid4().hex[:6]}",
            "--database-url", dsn,
            "--schemas", "schemas",
            "--dead-letter-topic", settings.topic_dead_letter,
        ],
        cwd=folder,
        env={"PATH": os.environ["PATH"]},
        stdout=out,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: bool(_connected(dsn)), what="the consumer's store connection")
        # the store drops the consumer's connection: the next effect is retried, not lost
        with psycopg.connect(dsn, autocommit=True) as admin:
            for pid in _connected(dsn):
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        first = events.outbox_row(
            "session.migrated",
            migrated("tutor-1", "s-1", "https://meet.google.com/aaa-bbbb-ccc"),
            tutor_id="tutor-1",
            source="/relink/migrator",
            topics=settings,
        )
        second = events.outbox_row(
            "session.migrated",
            migrated("tutor-1", "s-2", "https://meet.google.com/ddd-eeee-fff"),
            tutor_id="tutor-1",
            source="/relink/migrator",
            topics=settings,
        )
        write_outbox(engine, [first, second])
        with running_relay(relay_settings(settings)):
            wait_for(lambda: unpublished(engine) == 0, what="the relay publishes both")

        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
        # a redelivery of the first (same source and id), garbage, then what a
        # tolerant reader skips or reads: another type, a v2, a v1 with a new field
        again = events.outbox_message(
            event_id=first["event_id"],
            event_type=first["event_type"],
            aggregate_id=first["aggregate_id"],
            payload=first["payload"],
            headers=first["headers"],
        )
        producer.produce(
            topic, key=again.key, value=again.value, headers=list(again.headers.items())
        )
        producer.produce(
            topic, key=b"tutor-1", value=b"{definitely not json", headers=[("x", b"1")]
        )
        later = events.Event(
            id=str(uuid.uuid4()),
            type="session.migrated",
            source="/relink/migrator",
            subject="tutor-1",
            time=datetime.now(UTC),
            data=migrated("tutor-1", "s-3", "https://meet.google.com/ggg-hhhh-iii"),
        )
        _raw(producer, topic, dataclasses.replace(later, id=str(uuid.uuid4()), type="x.y"))
        _raw(producer, topic, dataclasses.replace(later, id=str(uuid.uuid4()), version=2))
        _raw(producer, topic, dataclasses.replace(later, data={**later.data, "room": "B"}))
        assert producer.flush(10) == 0

        wait_for(lambda: len(_links(dsn)) == 3, what="three links downstream")
        dead = read_topic(
            settings.kafka_bootstrap_servers,
            settings.topic_dead_letter,
            until=lambda got: len(got) >= 1,
        )
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(30)
        out.seek(0)
        log = out.read()
        sys.stdout.write(log[-4000:])
    assert consumer.returncode == 0
    assert _links(dsn) == {
        "s-1": "https://meet.google.com/aaa-bbbb-ccc",
        "s-2": "https://meet.google.com/ddd-eeee-fff",
        "s-3": "https://meet.google.com/ggg-hhhh-iii",
    }
    counts = dict(pair.split("=") for pair in log.strip().splitlines()[-1].split())
    assert {k: counts[k] for k in ("applied", "duplicate", "skipped", "dead-lettered")} == {
        "applied": "3",
        "duplicate": "1",
        "skipped": "2",
        "dead-lettered": "1",
    }
    assert int(counts["store-retries"]) >= 1
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


def test_the_standalone_consumer_reads_the_schemas_the_gateway_serves(
    engine: Engine,
    settings: CommonSettings,
    database_url: str,
    downstream_python: Path,
    served: str,
    tmp_path: Path,
) -> None:
    topic = settings.topic_session_migrated
    dsn = normalize_database_url(database_url).replace("postgresql+psycopg", "postgresql")
    folder = tmp_path / "downstream"
    shutil.copytree(EXAMPLE, folder)  # no schemas/ folder beside it this time
    out = (tmp_path / "consumer.log").open("w+")
    consumer = subprocess.Popen(
        [
            str(downstream_python), "consumer.py",
            "--bootstrap", settings.kafka_bootstrap_servers,
            "--topic", topic,
            "--group", f"calendar-sync-{uuid.uuid4().hex[:6]}",
            "--database-url", dsn,
            "--schema-base-url", f"{served}/schemas",
            "--dead-letter-topic", settings.topic_dead_letter,
        ],
        cwd=folder,
        env={"PATH": os.environ["PATH"]},
        stdout=out,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        row = events.outbox_row(
            "session.migrated",
            migrated("tutor-2", "s-9", "https://meet.google.com/jjj-kkkk-lll"),
            tutor_id="tutor-2",
            source="/relink/migrator",
            topics=settings,
        )
        write_outbox(engine, [row])
        with running_relay(relay_settings(settings)):
            wait_for(lambda: unpublished(engine) == 0, what="the relay publishes it")
        wait_for(lambda: len(_links(dsn)) == 1, what="the link downstream")
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(30)
        out.seek(0)
        log = out.read()
        sys.stdout.write(log[-4000:])
    assert consumer.returncode == 0
    assert _links(dsn) == {"s-9": "https://meet.google.com/jjj-kkkk-lll"}
    assert "applied=1 duplicate=0 skipped=0 dead-lettered=0" in log
