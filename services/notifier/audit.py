"""Audit replay and verification: read every relink topic from the beginning (or a time)
and rebuild or check `audit_log`.

Replay is idempotent (ON CONFLICT DO NOTHING on the event id), so it can run
beside a live notifier and be repeated. It reads with `assign` and never
commits offsets, so it touches no consumer group. Rows are written with COPY
into a temporary table and one INSERT … SELECT per batch: a round trip per
row would cap the replay at a few thousand events a second.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import psycopg
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from services.core import events
from services.core.kafka import consumer_config
from services.core.settings import CommonSettings
from services.notifier import domain
from services.notifier.errors import ReplayError

COLUMNS = (
    "event_id",
    "event_source",
    "event_type",
    "event_time",
    "tutor_id",
    "switch_id",
    "session_id",
    "from_provider",
    "to_provider",
    "outcome",
    "payload",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)

Progress = Callable[[int], None]
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class PartitionRange:
    topic: str
    partition: int
    start: int
    end: int  # exclusive: the high watermark when the replay began


@dataclass
class ReplayReport:
    read: int = 0
    inserted: int = 0
    skipped_invalid: int = 0


@dataclass
class VerifyReport:
    events_on_topics: int = 0  # messages, repeats included
    distinct_events: int = 0
    rows_in_table: int = 0
    missing: list[str] = field(default_factory=list)  # on the topics, not in the table
    extra: list[str] = field(default_factory=list)  # in the table, not on the topics
    different: list[tuple[str, str, Any, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different)


def audit_topics(settings: CommonSettings) -> list[str]:
    return [
        settings.topic_provider_switched,
        settings.topic_session_migrated,
        settings.topic_session_failed,
    ]


def _reader(settings: CommonSettings) -> Consumer:
    return Consumer(
        consumer_config(
            settings,
            group_id=f"relink-audit-reader-{uuid.uuid4().hex[:8]}",
            **{"fetch.max.bytes": 52_428_800, "queued.max.messages.kbytes": 65_536},
        )
    )


def plan(consumer: Consumer, topics: list[str], *, since: datetime | None) -> list[PartitionRange]:
    """Each partition's range to read: from the start (or `since`) to today's end."""
    try:
        metadata = consumer.list_topics(timeout=30)
    except KafkaException as exc:
        raise ReplayError(f"cannot read topic metadata: {exc}") from exc
    ranges: list[PartitionRange] = []
    for topic in topics:
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            raise ReplayError(f"topic {topic} does not exist")
        for partition in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
            start = low
            if since is not None:
                found = consumer.offsets_for_times(
                    [TopicPartition(topic, partition, int(since.timestamp() * 1000))], timeout=30
                )[0].offset
                start = high if found < 0 else max(low, found)
            ranges.append(PartitionRange(topic, partition, start, high))
    return ranges


def read_batches(
    settings: CommonSettings,
    *,
    since: datetime | None,
    batch_size: int = 10_000,
    on_plan: Callable[[int], None] | None = None,
) -> Iterator[list[Message]]:
    """The messages of every audited topic's range, in batches."""
    consumer = _reader(settings)
    try:
        ranges = [r for r in plan(consumer, audit_topics(settings), since=since) if r.end > r.start]
        if on_plan is not None:
            on_plan(sum(r.end - r.start for r in ranges))
        if not ranges:
            return
        consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in ranges])
        remaining = {(r.topic, r.partition): r.end for r in ranges}
        while remaining:
            messages = consumer.consume(num_messages=batch_size, timeout=1.0)
            batch = []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise ReplayError(f"consumer error: {error}")
                    continue
                where = (message.topic() or "", message.partition() or 0)
                end = remaining.get(where)
                if end is None or (message.offset() or 0) >= end:
                    continue  # arrived after the replay began: the live notifier has it
                batch.append(message)
                if (message.offset() or 0) >= end - 1:
                    del remaining[where]
            if batch:
                yield batch
    finally:
        consumer.close()


def kafka_headers(message: Message) -> list[tuple[str, bytes | None]]:
    """A message's headers as the events module takes them (librdkafka gives bytes)."""
    return cast("list[tuple[str, bytes | None]]", message.headers() or [])


def parse_for_audit(message: Message) -> events.Event:
    """Parse a message; its id must be a UUID, the audit trail's key."""
    event = events.parse_message(
        key=message.key(), value=message.value(), headers=kafka_headers(message)
    )
    if domain.as_uuid(event.id) is None:
        raise events.InvalidEvent("bad_event_id", "ce_id is not a UUID")
    return event


RawMessage = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], str, int, int]


def raw_of(message: Message) -> RawMessage:
    """What a parse worker needs of a message (librdkafka's objects do not pickle)."""
    return (
        message.key(),
        message.value(),
        kafka_headers(message),
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
    )


def rows_of(chunk: list[RawMessage]) -> tuple[list[tuple[Any, ...]], int]:
    """COPY-ready audit rows of raw messages, and how many could not be parsed.

    Values are text (COPY's own format) so no UUID or datetime objects are built
    only to be turned back into strings.
    """
    rows: list[tuple[Any, ...]] = []
    invalid = 0
    for key, value, headers, topic, partition, offset in chunk:
        try:
            event = events.parse_message(key=key, value=value, headers=headers)
            if _uuid_text(event.id) is None:
                raise events.InvalidEvent("bad_event_id", "ce_id is not a UUID")
        except events.InvalidEvent:
            invalid += 1
            continue
        data = event.data
        facts = domain.audit_facts(event.type, data)
        rows.append(
            (
                event.id,
                event.source,
                event.type,
                event.time.isoformat(),
                _uuid_text(data.get("tutor_id", event.subject)),
                _uuid_text(data.get("switch_id")),
                _uuid_text(data.get("session_id")),
                facts.from_provider,
                facts.to_provider,
                facts.outcome,
                # the message's own JSON goes into the jsonb column as it is
                value.decode() if value is not None else json.dumps(data),
                topic,
                partition,
                offset,
            )
        )
    return rows, invalid


def _uuid_text(value: Any) -> str | None:
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value  # already what str(UUID(value)) gives; parsing it costs ~1 µs
    parsed = domain.as_uuid(value)
    return None if parsed is None else str(parsed)


def _pg_dsn(settings: CommonSettings) -> str:
    return settings.sync_database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def replay(
    settings: CommonSettings,
    *,
    since: datetime | None = None,
    workers: int | None = None,
    on_plan: Callable[[int], None] | None = None,
    on_progress: Progress | None = None,
) -> ReplayReport:
    """Rebuild `audit_log` from the topics; rows already there are left as they are.

    Parsing and schema validation cost ~25 µs an event in Python, so they run
    in `workers` processes (default: one per core) while this process reads
    Kafka and writes PostgreSQL; the pool is started before the Kafka client
    so no librdkafka thread is forked.
    """
    report = ReplayReport()
    count = workers if workers is not None else (os.cpu_count() or 1)
    pool = (
        ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("forkserver"))
        if count > 1
        else None
    )
    try:
        with psycopg.connect(_pg_dsn(settings)) as conn:
            conn.execute(
                "CREATE TEMP TABLE audit_replay (LIKE audit_log INCLUDING DEFAULTS)"
                " ON COMMIT DELETE ROWS"
            )
            conn.commit()
            in_flight: deque[tuple[int, Future[tuple[list[tuple[Any, ...]], int]]]] = deque()
            for batch in read_batches(settings, since=since, on_plan=on_plan):
                raw = [raw_of(m) for m in batch]
                for i in range(0, len(raw), PARSE_CHUNK):
                    chunk = raw[i : i + PARSE_CHUNK]
                    if pool is None:
                        _write(conn, report, len(chunk), rows_of(chunk), on_progress)
                        continue
                    in_flight.append((len(chunk), pool.submit(rows_of, chunk)))
                while len(in_flight) > 2 * count:
                    size, future = in_flight.popleft()
                    _write(conn, report, size, future.result(), on_progress)
            while in_flight:
                size, future = in_flight.popleft()
                _write(conn, report, size, future.result(), on_progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return report


PARSE_CHUNK = 2000
_COLUMN_LIST = ", ".join(COLUMNS)


def _write(
    conn: psycopg.Connection[Any],
    report: ReplayReport,
    size: int,
    parsed: tuple[list[tuple[Any, ...]], int],
    on_progress: Progress | None,
) -> None:
    rows, invalid = parsed
    with conn.cursor() as cur:
        with cur.copy(f"COPY audit_replay ({_COLUMN_LIST}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            f"INSERT INTO audit_log ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM audit_replay"
            " ON CONFLICT (event_id) DO NOTHING"
        )
        report.inserted += cur.rowcount
    conn.commit()
    report.read += size
    report.skipped_invalid += invalid
    if on_progress is not None:
        on_progress(size)


def verify(
    settings: CommonSettings,
    *,
    since: datetime | None = None,
    on_plan: Callable[[int], None] | None = None,
    on_progress: Progress | None = None,
) -> VerifyReport:
    """Compare what the topics hold with `audit_log`; report every difference."""
    report = VerifyReport()
    expected: dict[str, dict[str, Any]] = {}
    for batch in read_batches(settings, since=since, on_plan=on_plan):
        for message in batch:
            try:
                event = parse_for_audit(message)
            except events.InvalidEvent:
                continue
            report.events_on_topics += 1
            expected.setdefault(
                str(uuid.UUID(event.id)),
                domain.audit_row(
                    event_id=event.id,
                    source=event.source,
                    event_type=event.type,
                    time=event.time,
                    subject=event.subject,
                    data=event.data,
                    topic=None,
                    partition=None,
                    offset=None,
                ),
            )
        if on_progress is not None:
            on_progress(len(batch))
    columns = ", ".join(("event_id", *domain.COMPARED_COLUMNS))
    query = f"SELECT {columns} FROM audit_log"
    params: tuple[Any, ...] = ()
    if since is not None:
        query += " WHERE event_time >= %s"
        params = (since,)
    seen: set[str] = set()
    with psycopg.connect(_pg_dsn(settings)) as conn, conn.cursor(name="audit_verify") as cur:
        cur.execute(query, params)
        names = [d.name for d in cur.description or []]
        for values in cur:
            actual = dict(zip(names, values, strict=True))
            event_id = str(actual["event_id"])
            report.rows_in_table += 1
            want = expected.get(event_id)
            if want is None:
                report.extra.append(event_id)
                continue
            seen.add(event_id)
            for column, on_topic, in_table in domain.audit_differences(want, actual):
                report.different.append((event_id, column, on_topic, in_table))
    report.missing = sorted(set(expected) - seen)
    report.distinct_events = len(expected)
    return report
