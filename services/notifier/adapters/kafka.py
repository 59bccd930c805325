"""Kafka I/O of the notifier: the live consumer and its dead-letter producer, and the
audit replay's reader (assigned partitions, no consumer group offsets).

Consumed batches are parsed here (an unparseable message goes to the dead-letter
topic, flushed before its offset moves on); offsets are committed synchronously,
one past the last message seen on each partition.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from services.core import events, metrics
from services.core.kafka import consumer_config
from services.core.logs import get_logger
from services.core.settings import CommonSettings
from services.notifier import domain
from services.notifier.domain import Consumed, PartitionRange, RawMessage
from services.notifier.errors import DeadLetterError, ReplayError

log = get_logger(__name__)


def audit_topics(settings: CommonSettings) -> list[str]:
    """The topics the notifier consumes and the audit trail is made of."""
    return [
        settings.topic_provider_switched,
        settings.topic_session_migrated,
        settings.topic_session_failed,
    ]


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


class NotifierEvents:
    """The live loop's Kafka side: the notifier's consumer group and the dead-letter topic."""

    def __init__(self, *, consumer: Consumer, dead_letters: Producer, settings: CommonSettings):
        self.consumer = consumer
        self.dead_letters = dead_letters
        self.settings = settings
        self.dead_lettered = 0
        self.skipped = events.SkipCounts()

    def subscribe(self, on_assign: Callable[[Any, list[TopicPartition]], None]) -> None:
        self.consumer.subscribe(audit_topics(self.settings), on_assign=on_assign)

    def consume(self, *, batch_size: int, timeout_s: float) -> list[Message]:
        """Up to `batch_size` messages; consumer errors are logged and left out.

        Waits up to `timeout_s` for the first message only, then takes what
        the client has fetched already: `consume(num_messages=n, timeout=t)`
        alone waits the whole timeout out whenever fewer than n records come
        (up to 0.5 s of every email's latency at low load, issue 21), while a
        busy topic still fills the batch from the prefetched queue.
        """
        messages = self.consumer.consume(num_messages=1, timeout=timeout_s)
        if messages and batch_size > 1:
            messages += self.consumer.consume(num_messages=batch_size - 1, timeout=0)
        return [m for m in messages if not _log_error(m)]

    def parse_batch(self, messages: list[Message]) -> list[Consumed]:
        """Parse a batch; what cannot be parsed goes (durably) to the dead-letter topic."""
        parsed: list[Consumed] = []
        dead = 0
        for message in messages:
            try:
                event = parse_for_audit(message)
            except events.SkippedEvent as exc:
                # a type or version the notifier does not read: counted, logged,
                # committed past with the batch; not dead-lettered
                log.info(
                    "skipped %s[%s]@%s (%s, %d so far): %s",
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    exc.reason,
                    self.skipped.add(exc),
                    exc.detail,
                )
                continue
            except events.InvalidEvent as exc:
                self._dead_letter(message, exc)
                dead += 1
                continue
            parsed.append(
                Consumed(
                    event=event,
                    topic=message.topic() or "",
                    partition=message.partition() or 0,
                    offset=message.offset() or 0,
                )
            )
        if dead and self.dead_letters.flush(30) != 0:
            raise DeadLetterError("the dead-letter topic did not acknowledge in 30 s")
        return parsed

    def dead_letter_refused(
        self, messages: list[Message], refused: list[tuple[Consumed, str]]
    ) -> None:
        """Send events the database does not back to the dead-letter topic (durably),
        with reason `unverified` and why; before their offsets are committed."""
        if not refused:
            return
        by_place = {(m.topic(), m.partition(), m.offset()): m for m in messages}
        for consumed, why in refused:
            message = by_place.get((consumed.topic, consumed.partition, consumed.offset))
            if message is not None:
                self._dead_letter(message, events.InvalidEvent("unverified", why))
        if self.dead_letters.flush(30) != 0:
            raise DeadLetterError("the dead-letter topic did not acknowledge in 30 s")

    def caught_up(self, *, timeout_s: float = 5.0) -> bool:
        """True when the group's committed offsets reach the end of every partition.

        Every partition of the consumed topics, assigned to this process or not:
        a member killed a moment ago still holds its partitions until its session
        times out, and a process that only looked at its own would call the
        group idle while those records wait (`--until-idle` exited early).
        """
        partitions: list[TopicPartition] = []
        for topic in audit_topics(self.settings):
            described = self.consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if described is None or described.error is not None:
                return False
            partitions += [TopicPartition(topic, p) for p in described.partitions]
        committed = self.consumer.committed(partitions, timeout=timeout_s)
        for tp in committed:
            low, high = self.consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
            # No commit yet (a negative offset) counts as the partition's start.
            if max(tp.offset, low) < high:
                return False
        return True

    def commit(self, messages: list[Message]) -> None:
        """Commit (synchronously) the offsets one past the last message of each partition."""
        self.consumer.commit(offsets=_next_offsets(messages), asynchronous=False)

    def _dead_letter(self, message: Message, error: events.InvalidEvent) -> None:
        metrics.DEAD_LETTERS.labels(process="notifier", reason=error.reason).inc()
        letter = events.dead_letter(
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=message.key(),
            value=message.value(),
            headers=kafka_headers(message),
            error=error,
            dead_letter_topic=self.settings.topic_dead_letter,
        )
        headers: list[tuple[str, str | bytes | None]] = list(letter.headers)
        self.dead_letters.produce(letter.topic, key=letter.key, value=letter.value, headers=headers)
        self.dead_lettered += 1
        log.warning(
            "dead-lettered %s[%s]@%s: %s",
            message.topic(),
            message.partition(),
            message.offset(),
            error.reason,
        )

    def close(self) -> None:
        self.consumer.close()
        self.dead_letters.flush(5)


def _log_error(message: Message) -> bool:
    error = message.error()
    if error is None:
        return False
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error: %s", error)
    return True


def _next_offsets(messages: list[Message]) -> list[TopicPartition]:
    """The offset to resume from on each partition: one past the last message seen."""
    highest: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic() or "", message.partition() or 0)
        highest[key] = max(highest.get(key, -1), message.offset() or 0)
    return [
        TopicPartition(topic, partition, offset + 1)
        for (topic, partition), offset in highest.items()
    ]


class AuditTopicReader:
    """Reads every audited topic's history with `assign`: it commits no offsets and
    touches no consumer group, so it can run beside a live notifier."""

    def __init__(self, settings: CommonSettings) -> None:
        self.settings = settings

    def _consumer(self) -> Consumer:
        return Consumer(
            consumer_config(
                self.settings,
                group_id=f"relink-audit-reader-{uuid.uuid4().hex[:8]}",
                **{"fetch.max.bytes": 52_428_800, "queued.max.messages.kbytes": 65_536},
            )
        )

    def read_batches(
        self,
        *,
        since: datetime | None,
        batch_size: int = 10_000,
        on_plan: Callable[[int], None] | None = None,
    ) -> Iterator[list[Message]]:
        """The messages of every audited topic's range, in batches."""
        consumer = self._consumer()
        try:
            ranges = [
                r
                for r in plan(consumer, audit_topics(self.settings), since=since)
                if r.end > r.start
            ]
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
            found = None
            if since is not None:
                found = consumer.offsets_for_times(
                    [TopicPartition(topic, partition, int(since.timestamp() * 1000))], timeout=30
                )[0].offset
            ranges.append(domain.partition_range(topic, partition, low=low, high=high, found=found))
    return ranges
