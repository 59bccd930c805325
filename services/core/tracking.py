"""Tracking records: the one way a consumer remembers which events it has handled.

Kafka delivers at least once: a record produced twice, a consumer that dies
before committing its offsets, a rebalance, a group reset -- each hands a
consumer an event it has already acted on. Each consumer (the migrator, the
notifier) therefore writes one `tracking` row per event it handles,
`(consumer, event source, event id)` -- the CloudEvents dedup key,
`Event.dedup_key` -- *in the transaction that makes the handler's effect*
(the notifier's audit rows and owed emails, the migrator's plan, retry or
rollback), and looks for that row before handling an event. A redelivered
event finds it and does nothing; an effect that did not commit left no row,
so the redelivery handles the event again. The Kafka offset is only where
to resume reading, not the record of what was done.

This is pyeventsourcing's `Tracking` / `ProcessRecorder` (`persistence.py`,
`postgres.py`): a process application inserts its tracking record with the
new events in one transaction, and its primary key refuses a second one.
Here the key is the event's own id rather than a notification position,
because relink's consumers read several topics and partitions, and because
the same event can sit at two offsets (produced twice).

`consumer` is the logical consumer (`MIGRATOR`, `NOTIFIER`), not its Kafka
group: a consumer started on a new group re-reads the topics and must still
recognise what it did.

`track` / `track_async` insert with ON CONFLICT DO NOTHING and say which
rows were new: a concurrent handler of the same event (two processes during
a rebalance) waits on the other's uncommitted row, then finds it there and
leaves the effect to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Select, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from services.core.db.models import Tracking
from services.core.events import Event

MIGRATOR = "migrator"
NOTIFIER = "notifier"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event as a consumer received it: its dedup key and where it was read."""

    consumer: str
    source: str
    event_id: str
    event_type: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    @classmethod
    def of(
        cls,
        consumer: str,
        event: Event,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Delivery:
        return cls(consumer, event.source, event.id, event.type, topic, partition, offset)

    @property
    def key(self) -> tuple[str, str]:
        """`(source, event id)`, the CloudEvents dedup key."""
        return (self.source, self.event_id)

    def row(self) -> dict[str, object]:
        return {
            "consumer": self.consumer,
            "event_source": self.source,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "kafka_topic": self.topic,
            "kafka_partition": self.partition,
            "kafka_offset": self.offset,
        }


def _handled_query(consumer: str, keys: Iterable[tuple[str, str]]) -> Select[str, str]:
    return select(Tracking.event_source, Tracking.event_id).where(
        Tracking.consumer == consumer,
        tuple_(Tracking.event_source, Tracking.event_id).in_(list(keys)),
    )


def _insert(deliveries: Sequence[Delivery]) -> ReturningInsert[str, str]:
    return (
        insert(Tracking)
        .values([d.row() for d in deliveries])
        .on_conflict_do_nothing()
        .returning(Tracking.event_source, Tracking.event_id)
    )


def handled(
    conn: Connection | Session, consumer: str, keys: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of these `(source, event id)` keys the consumer has already handled."""
    wanted = set(keys)
    if not wanted:
        return set()
    return {(r[0], r[1]) for r in conn.execute(_handled_query(consumer, wanted))}


def track(conn: Connection | Session, deliveries: Sequence[Delivery]) -> set[tuple[str, str]]:
    """Record these deliveries as handled (in the caller's transaction); the keys that were new."""
    unique = list({(d.consumer, *d.key): d for d in deliveries}.values())
    if not unique:
        return set()
    return {(r[0], r[1]) for r in conn.execute(_insert(unique))}


async def handled_async(conn: AsyncConnection, delivery: Delivery) -> bool:
    """Whether the consumer has already handled this event."""
    rows = await conn.execute(_handled_query(delivery.consumer, [delivery.key]))
    return rows.first() is not None


async def track_async(conn: AsyncConnection, delivery: Delivery | None) -> bool:
    """`track` for an async connection (the migrator); True if the row was new."""
    if delivery is None:
        return False
    rows = await conn.execute(_insert([delivery]))
    return rows.first() is not None
