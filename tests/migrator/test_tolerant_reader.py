"""The migrator reads as a tolerant reader (issue 20).

Records on its topic that it was not built for -- an event type it does not
know, a newer version of `provider.switched` -- are skipped, counted and
logged, not dead-lettered; a `provider.switched` v1 carrying a property added
later is migrated as the event it knows. Only what cannot be read at all is
dead-lettered, and records after all of them are still handled.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer
from sqlalchemy import Engine

from services.core import events
from services.core.kafka import producer_config
from services.core.settings import CommonSettings
from tests.migrator.conftest import read_topic, settled, switch_row, wait_for
from tests.migrator.factory import Factory

SOURCE = "/relink/gateway"


def _produce(producer: Producer, topic: str, event: events.Event) -> None:
    # built with the dataclass, not new_event: these events are not valid for
    # relink's own (strict) producers, only readable by tolerant readers
    message = events.to_message(event)
    headers: list[tuple[str, str | bytes | None]] = list(message.headers.items())
    producer.produce(topic, key=message.key, value=message.value, headers=headers)


async def test_extra_fields_newer_versions_and_unknown_types_are_not_dead_lettered(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    relay: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="zoom")
    factory.sessions(tutor, count=2)
    switch_id = factory.switch(tutor, to_provider="google_meet", publish=False)
    row = switch_row(engine, switch_id)
    switched = events.Event(
        id=str(uuid.uuid4()),
        type="provider.switched",
        source=SOURCE,
        subject=str(tutor.id),
        time=datetime.now(UTC),
        data={
            "switch_id": str(switch_id),
            "tutor_id": str(tutor.id),
            "from_provider": row.from_provider,
            "to_provider": row.to_provider,
            "generation": row.generation,
            "switched_at": datetime.now(UTC).isoformat(),
        },
    )
    topic = settings.topic_provider_switched
    producer = Producer(producer_config(settings))
    # 1. an event type the migrator has never heard of, on its topic
    _produce(
        producer,
        topic,
        dataclasses.replace(switched, id=str(uuid.uuid4()), type="tutor.renamed", data={"x": 1}),
    )
    # 2. a v2 of provider.switched (its dataschema names v2): not read, skipped
    _produce(
        producer,
        topic,
        dataclasses.replace(switched, id=str(uuid.uuid4()), version=2),
    )
    # 3. the v1 switch, with an optional property added later: migrated
    _produce(producer, topic, dataclasses.replace(switched, data={**switched.data, "note": "new"}))
    # 4. something unreadable after all of them: the one dead letter
    producer.produce(topic, key=str(tutor.id).encode(), value=b"{oops")
    assert producer.flush(10) == 0

    migrator = start_migrator()
    done = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert (done.state, done.sessions_migrated) == ("COMPLETED", 2)
    dead = read_topic(
        settings.kafka_bootstrap_servers, settings.topic_dead_letter, until=lambda g: len(g) >= 1
    )
    assert [d.value for d in dead] == [b"{oops"]  # the oops is the only dead letter
    wait_for(lambda: "newer_version" in migrator.output(), what="the skip log lines")
    log = migrator.output()
    assert "unknown_type, 1 so far" in log
    assert "newer_version, 1 so far" in log
