"""The migrator reads as a tolerant reader (issue 20).

Records on its topic that it was not built for -- an event type it does not
know, a newer version of `provider.switched` -- are skipped, counted and
logged, not dead-lettered; a `provider.switched` v1 carrying a property added
later is migrated as the event it knows. Only what cannot be read at all is
dead-lettered, and records after all of them are still handled.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from services.core import events, outbox
from services.core.kafka import producer_config
from services.core.settings import CommonSettings
from tests.migrator.conftest import read_topic, settled, switch_row, wait_for
from tests.migrator.factory import Factory

SOURCE = "/relink/gateway"
V2_SCHEMA = Path(__file__).parent / "schemas_v2" / "provider.switched.v2.json"


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


@pytest.fixture
def schemas_with_a_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The packaged schemas plus a provider.switched v2 made for this test (renames a field)."""
    folder = tmp_path / "schemas"
    shutil.copytree(str(events.SCHEMAS_DIR), folder, symlinks=False)
    shutil.copy(V2_SCHEMA, folder / "provider.switched" / "v2.json")
    monkeypatch.setattr(events, "SCHEMAS_DIR", folder)
    _clear_schema_caches()
    yield
    monkeypatch.undo()
    _clear_schema_caches()


def _clear_schema_caches() -> None:
    for cached in (events.load_schema, events._validator, events._fast_check):
        cached.cache_clear()


async def test_a_dual_published_switch_is_read_once_in_the_version_the_migrator_reads(
    engine: Engine,
    settings: CommonSettings,
    relink_env: dict[str, str],
    factory: Factory,
    relay: Any,
    start_migrator: Any,
    schemas_with_a_v2: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELINK_EVENTS_DUAL_PUBLISH", '["provider.switched"]')
    window = CommonSettings(RELINK_TOPIC_PREFIX=relink_env["RELINK_TOPIC_PREFIX"])
    assert window.events_dual_publish == ["provider.switched"]
    tutor = await factory.tutor(provider="zoom")
    factory.sessions(tutor, count=2)
    switch_id = factory.switch(tutor, to_provider="google_meet", publish=False)
    row = switch_row(engine, switch_id)
    v1 = {
        "switch_id": str(switch_id),
        "tutor_id": str(tutor.id),
        "from_provider": row.from_provider,
        "to_provider": row.to_provider,
        "generation": row.generation,
        "switched_at": datetime.now(UTC).isoformat(),
    }
    v2 = {**{k: v for k, v in v1.items() if k != "from_provider"}, "previous_provider": "zoom"}
    rows = events.outbox_rows(
        "provider.switched",
        {1: v1, 2: v2},
        tutor_id=str(tutor.id),
        source=SOURCE,
        topics=window,
        dual_publish=window.events_dual_publish,
    )
    # outside the window, only v1 goes out; a v2 payload is checked against v2 (strictly)
    assert (
        len(
            events.outbox_rows(
                "provider.switched",
                {1: v1, 2: v2},
                tutor_id=str(tutor.id),
                source=SOURCE,
                topics=window,
            )
        )
        == 1
    )
    with pytest.raises(events.InvalidEvent):
        events.outbox_rows(
            "provider.switched",
            {1: v1, 2: v1},
            tutor_id=str(tutor.id),
            source=SOURCE,
            topics=window,
            dual_publish=["provider.switched"],
        )
    with Session(engine) as db, db.begin():
        outbox.append(db, tutor.id, rows)

    migrator = start_migrator()
    published = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_provider_switched,
        until=lambda got: len(got) >= 2,
    )
    schemas = sorted(dict(m.headers)["ce_dataschema"].decode() for m in published)
    assert schemas == [events.schema_uri("provider.switched", version=v) for v in (1, 2)]
    done = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert (done.state, done.sessions_migrated) == ("COMPLETED", 2)
    wait_for(lambda: "newer_version, 1 so far" in migrator.output(), what="the v2 skipped")
    producer = Producer(producer_config(settings))
    producer.produce(settings.topic_provider_switched, key=str(tutor.id).encode(), value=b"{oops")
    assert producer.flush(10) == 0
    dead = read_topic(
        settings.kafka_bootstrap_servers, settings.topic_dead_letter, until=lambda g: len(g) >= 1
    )
    assert [d.value for d in dead] == [b"{oops"]  # neither version was dead-lettered
