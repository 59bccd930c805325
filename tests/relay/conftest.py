"""Helpers for the relay tests: write outbox rows, run relays, read topics."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from services.core import events
from services.core.db.models import Outbox
from services.core.settings import CommonSettings
from services.relay.bootstrap import build_relay
from services.relay.settings import RelaySettings

SOURCE = "/relink/tests"


def switched_payload(tutor_id: str, n: int) -> dict[str, Any]:
    """A valid provider.switched payload; `generation` carries the tutor's sequence number."""
    return {
        "switch_id": str(uuid.uuid4()),
        "tutor_id": tutor_id,
        "from_provider": "zoom" if n % 2 else "google_meet",
        "to_provider": "google_meet" if n % 2 else "zoom",
        "generation": n,
        "switched_at": datetime.now(UTC).isoformat(),
    }


def outbox_values(settings: CommonSettings, tutor_id: str, n: int) -> dict[str, Any]:
    return events.outbox_row(
        "provider.switched",
        switched_payload(tutor_id, n),
        tutor_id=tutor_id,
        source=SOURCE,
        topics=settings,
    )


def write_rows(
    engine: Engine, settings: CommonSettings, tutors: list[str], per_tutor: int, *, first: int = 1
) -> list[dict[str, Any]]:
    """Insert per_tutor rows for each tutor in ONE transaction, interleaved; return them.

    Each row's `generation` is its tutor's sequence number, starting at `first`.
    """
    rows = [outbox_values(settings, t, n) for n in range(first, first + per_tutor) for t in tutors]
    with Session(engine) as session, session.begin():
        session.execute(insert(Outbox), rows)
    return rows


def relay_settings(settings: CommonSettings, **overrides: Any) -> RelaySettings:
    values: dict[str, Any] = {
        "DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "RELINK_TOPIC_PREFIX": settings.topic_prefix,
        "RELINK_RELAY_POLL_INTERVAL_S": 0.2,
        "RELINK_RELAY_BACKOFF_MAX_S": 1.0,
        "RELINK_RELAY_DELIVERY_TIMEOUT_S": 3.0,
    }
    values.update(overrides)
    return RelaySettings(**values)


@contextmanager
def running_relay(settings: RelaySettings) -> Iterator[Any]:
    """A relay in a background thread, stopped and closed on exit."""
    relay = build_relay(settings)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        stop.set()
        thread.join(timeout=30)
        relay.close()


@dataclass
class Received:
    key: str
    value: bytes
    headers: list[tuple[str, bytes]]
    partition: int
    offset: int

    @property
    def event(self) -> events.Event:
        return events.parse_message(key=self.key.encode(), value=self.value, headers=self.headers)


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Received]], bool],
    timeout_s: float = 60.0,
) -> list[Received]:
    """Read a topic from the beginning until `until(messages)` holds (or fail on timeout)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
        received: list[Received] = []
        deadline = time.monotonic() + timeout_s
        while not until(received):
            if time.monotonic() > deadline:
                pytest.fail(f"{topic}: only {len(received)} messages after {timeout_s}s")
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error():
                    continue
                # a consumed message has its partition and offset, and bytes header values
                partition, offset = message.partition(), message.offset()
                assert partition is not None and offset is not None
                headers = cast("list[tuple[str, bytes]] | None", message.headers())
                received.append(
                    Received(
                        key=(message.key() or b"").decode(),
                        value=message.value() or b"",
                        headers=list(headers or []),
                        partition=partition,
                        offset=offset,
                    )
                )
        return received
    finally:
        consumer.close()


def ids_of(received: list[Received]) -> list[str]:
    return [m.event.id for m in received]


def assert_per_tutor_order(received: list[Received]) -> None:
    """After dropping redelivered copies, each tutor's generations strictly increase."""
    seen: set[str] = set()
    last: dict[str, int] = {}
    for message in sorted(received, key=lambda m: (m.partition, m.offset)):
        event = message.event
        if event.id in seen:
            continue
        seen.add(event.id)
        generation = event.data["generation"]
        assert generation > last.get(event.tutor_id, 0), (
            f"{event.tutor_id}: generation {generation} after {last.get(event.tutor_id)}"
        )
        last[event.tutor_id] = generation


def unpublished(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            ).scalar_one()
        )


def relay_subprocess(env: dict[str, str], **extra: str) -> subprocess.Popen[bytes]:
    """`relink relay` as a real process."""
    relink = os.path.join(os.path.dirname(sys.executable), "relink")
    return subprocess.Popen(
        [relink, "relay"],
        env={**env, "RELINK_RELAY_POLL_INTERVAL_S": "0.2", **extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for(condition: Callable[[], bool], *, timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or condition}")
        time.sleep(0.1)
