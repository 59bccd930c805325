"""The consumer loop (entrypoint): Kafka in, `Notifier` calls, offsets out.

Per batch: parse each message (an unparseable one goes to the dead-letter
topic, flushed before its offset moves on), record the batch's effects in
one transaction, then commit the offsets synchronously. Between batches, owed
emails are sent and settled switches get their tutor summary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from sqlalchemy.exc import InterfaceError, OperationalError

from services.core import events
from services.core.logs import get_logger
from services.notifier.audit import kafka_headers, parse_for_audit
from services.notifier.errors import NotifierError
from services.notifier.service import Consumed, Notifier
from services.notifier.settings import NotifierSettings

log = get_logger(__name__)
T = TypeVar("T")
# How long to wait before trying PostgreSQL again with a batch in hand.
DATABASE_RETRY_S = 1.0


class DeadLetterError(NotifierError):
    """The dead-letter topic did not acknowledge; the batch is not committed."""


class NotifierLoop:
    """Consumes relink's topics in the notifier's own group."""

    def __init__(
        self,
        *,
        notifier: Notifier,
        consumer: Consumer,
        dead_letters: Producer,
        settings: NotifierSettings,
    ) -> None:
        self.notifier = notifier
        self.consumer = consumer
        self.dead_letters = dead_letters
        self.settings = settings
        self.consumed = 0
        self.dead_lettered = 0
        self._assigned = False

    def topics(self) -> list[str]:
        s = self.settings
        return [s.topic_provider_switched, s.topic_session_migrated, s.topic_session_failed]

    def run(self, *, stop: threading.Event, until_idle_s: float | None = None) -> None:
        """Consume, record, send, until `stop` is set (or idle that long, for scripts).

        While PostgreSQL is unreachable the consumed batch is kept (its offsets
        uncommitted) and retried; the loop never exits over a database restart.
        """
        self.consumer.subscribe(self.topics(), on_assign=self._on_assign)
        last_activity = time.monotonic()
        last_sweep = 0.0
        pending: tuple[list[Consumed], list[Message]] | None = None
        while not stop.is_set():
            if pending is None:
                messages = self.consumer.consume(
                    num_messages=self.settings.batch_size, timeout=self._wait_s()
                )
                received = [m for m in messages if not _log_error(m)]
                if received:
                    pending = (self.parse_batch(received), received)
            if pending is not None:
                if not self._database(partial(self._record_pending, pending)):
                    stop.wait(DATABASE_RETRY_S)
                    continue
                pending = None
                last_activity = time.monotonic()
                last_sweep = 0.0  # a settled switch's last event may be in this batch
            due = time.monotonic() - last_sweep >= self.settings.summary_sweep_s
            if due and self._database(self.notifier.queue_summaries) is not None:
                last_sweep = time.monotonic()
            report = self._database(lambda: self.notifier.send_due(limit=self.settings.send_burst))
            if report and (report.sent or report.failed):
                last_activity = time.monotonic()
            if (
                until_idle_s is not None
                and self._assigned
                and time.monotonic() - last_activity > until_idle_s
                and self._database(self._nothing_owed) is True
            ):
                break

    def parse_batch(self, messages: list[Message]) -> list[Consumed]:
        """Parse a batch; what cannot be parsed goes (durably) to the dead-letter topic."""
        parsed: list[Consumed] = []
        dead = 0
        for message in messages:
            try:
                event = parse_for_audit(message)
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

    def _record_pending(self, pending: tuple[list[Consumed], list[Message]]) -> bool:
        self.record_and_commit(*pending)
        return True

    def _nothing_owed(self) -> bool:
        return self.notifier.seconds_to_next_send() is None

    def record_and_commit(self, parsed: list[Consumed], messages: list[Message]) -> None:
        self.notifier.record(parsed)
        self.consumer.commit(offsets=_next_offsets(messages), asynchronous=False)
        self.consumed += len(messages)

    def _database(self, work: Callable[[], T]) -> T | None:
        """Run `work`; on a lost database connection log it and return None."""
        try:
            return work()
        except (OperationalError, InterfaceError) as exc:
            log.warning("database unavailable, will retry: %s", type(exc).__name__)
            return None

    def _dead_letter(self, message: Message, error: events.InvalidEvent) -> None:
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

    def _wait_s(self) -> float:
        due_in = self._database(self.notifier.seconds_to_next_send)
        if due_in is None:
            return self.settings.poll_timeout_s
        return max(0.01, min(self.settings.poll_timeout_s, due_in))

    def _on_assign(self, _consumer: Any, _partitions: list[TopicPartition]) -> None:
        self._assigned = True

    def close(self) -> None:
        self.consumer.close()
        self.dead_letters.flush(5)
        self.notifier.mailer.close()


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
