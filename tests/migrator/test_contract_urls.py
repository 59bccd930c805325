"""The deployment's own URLs in the events, across an upgrade (issue 20).

A migrator started with RELINK_EVENTS_SOURCE_BASE / RELINK_EVENTS_SCHEMA_BASE
writes `ce_source = <base>/migrator` and `ce_dataschema` under the schema base,
while it reads a `provider.switched` whose dataschema is under another base (by
type and version, not host). An event built before the upgrade with the old
relative source, handled then, and published again after it (the relay
re-publishing its row) is recognised by its tracking record: the record keeps
the source it was built with, so the `(source, id)` key is the same.

Real Kafka, real PostgreSQL, the real relay, `relink migrator` processes, the
provider simulator.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from services.core import events
from services.core.db.models import Outbox, SwitchRequest
from services.core.settings import CommonSettings
from tests.migrator.conftest import read_topic, settled, wait_for
from tests.migrator.factory import Factory

# What the gateway wrote as `ce_source` before the setting existed.
LEGACY_SOURCE = "/relink/oauth-gateway"
BASE = "https://relink.school.test"
SCHEMAS = "https://relink.school.test/contract/schemas"
# The switch event comes from a deployment serving its schemas elsewhere.
OTHER_SCHEMAS = "https://elsewhere.test/s"


def _legacy_switched_row(engine: Engine, settings: CommonSettings, switch_id: uuid.UUID) -> str:
    """The `provider.switched` outbox row as the gateway wrote it before the upgrade."""
    with Session(engine) as db, db.begin():
        row = db.get_one(SwitchRequest, switch_id)
        values = events.outbox_row(
            "provider.switched",
            {
                "switch_id": str(switch_id),
                "tutor_id": str(row.tutor_id),
                "from_provider": row.from_provider,
                "to_provider": row.to_provider,
                "generation": row.generation,
                "switched_at": datetime.now(UTC).isoformat(),
            },
            tutor_id=str(row.tutor_id),
            source=LEGACY_SOURCE,
            topics=settings.model_copy(update={"events_schema_base": OTHER_SCHEMAS}),
        )
        db.execute(insert(Outbox).values(**values))
    return str(values["event_id"])


def _headers(message: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in dict(message.headers).items()}


async def test_sources_and_dataschemas_follow_the_settings_and_old_events_stay_handled(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    relay: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="zoom")
    factory.sessions(tutor, count=2)
    first = factory.switch(tutor, to_provider="google_meet", publish=False)
    legacy_id = _legacy_switched_row(engine, settings, first)

    # before the upgrade: the switch is handled and tracked under the old source
    before = start_migrator()
    wait_for(lambda: settled(engine, first), what="the first switch settles")
    before.stop()

    # the upgrade; the relay publishes the old row again (it died before marking it)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE outbox SET published_at = NULL WHERE event_id = :id"), {"id": legacy_id}
        )
    start_migrator(RELINK_EVENTS_SOURCE_BASE=BASE + "/", RELINK_EVENTS_SCHEMA_BASE=SCHEMAS)
    # the same tutor (same partition, after the old record): once it settles, the
    # migrator has read the re-published record
    second = factory.switch(tutor, to_provider="zoom")
    done = wait_for(lambda: settled(engine, second), what="the second switch settles")
    assert (done.state, done.sessions_migrated) == ("COMPLETED", 2)

    switched = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_provider_switched,
        until=lambda got: sum(_headers(m)["ce_id"] == legacy_id for m in got) >= 2,
    )
    republished = [_headers(m) for m in switched if _headers(m)["ce_id"] == legacy_id]
    # the relay publishes the row as it was built: its source is not re-stamped
    assert [h["ce_source"] for h in republished] == [LEGACY_SOURCE, LEGACY_SOURCE]
    assert {h["ce_dataschema"] for h in republished} == {
        f"{OTHER_SCHEMAS}/provider.switched/v1.json"
    }
    with engine.connect() as conn:
        tracked = conn.execute(
            text("SELECT consumer, event_source FROM tracking WHERE event_id = :id"),
            {"id": legacy_id},
        ).all()
    # recognised under the key it was tracked with: no second tracking record
    assert [tuple(r) for r in tracked] == [("migrator", LEGACY_SOURCE)]

    migrated = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_session_migrated,
        until=lambda got: len(got) >= 4,
    )
    ours = [
        _headers(m) for m in migrated if str(second) in m.value.decode()
    ]  # the upgraded migrator's events
    assert len(ours) == 2
    assert {h["ce_source"] for h in ours} == {f"{BASE}/migrator"}
    assert {h["ce_dataschema"] for h in ours} == {f"{SCHEMAS}/session.migrated/v1.json"}
    # and the ones from before the upgrade carry the default base's source
    earlier = [_headers(m) for m in migrated if str(first) in m.value.decode()]
    assert {h["ce_source"] for h in earlier} == {f"{events.SOURCE_BASE_URI}/migrator"}
