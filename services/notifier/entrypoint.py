"""The notifier's process loop: Kafka in, `Notifier` use cases, offsets out.

Per batch: parse each message (an unparseable one goes to the dead-letter
topic, flushed before its offset moves on), record the batch's effects in
one transaction, then commit the offsets synchronously. Between batches, owed
emails are sent. (A switch's tutor summary is owed when its `switch.settled`
is recorded; nothing polls `provider_switches`.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import KafkaException, Message, TopicPartition

from services.core.backoff import Outage
from services.core.db.errors import run_while_up
from services.core.logs import get_logger
from services.notifier.adapters.kafka import NotifierEvents
from services.notifier.domain import Consumed
from services.notifier.errors import DeadLetterError
from services.notifier.settings import NotifierSettings
from services.notifier.usecases.notify import Notifier

log = get_logger(__name__)
T = TypeVar("T")


class NotifierLoop:
    """Consumes relink's topics in the notifier's own group."""

    def __init__(
        self,
        *,
        notifier: Notifier,
        events: NotifierEvents,
        settings: NotifierSettings,
    ) -> None:
        self.notifier = notifier
        self.events = events
        self.settings = settings
        self.consumed = 0
        self._assigned = False
        self._assigned_at = 0.0
        self.database = Outage("PostgreSQL", log=log)
        self.kafka = Outage("Kafka (offsets, dead letters)", log=log)

    def run(self, *, stop: threading.Event, until_idle_s: float | None = None) -> None:
        """Consume, record, send, until `stop` is set (or idle that long, for scripts).

        While PostgreSQL is unreachable the consumed batch is kept (its offsets
        uncommitted) and retried with backoff; an offset commit Kafka refuses
        is left to a later one (recording a batch again is idempotent). The
        loop never exits over an outage of either; each is logged once when
        it starts and once when it ends.
        """
        self.events.subscribe(on_assign=self._on_assign)
        last_activity = time.monotonic()
        pending: tuple[list[Consumed], list[Message]] | None = None
        # A batch read but not parsed yet: its unreadable records could not be
        # dead-lettered (Kafka away). Kept, offsets uncommitted, and parsed again
        # (so dead-lettered again) once Kafka answers: nothing is skipped.
        unparsed: list[Message] | None = None
        while not stop.is_set():
            if pending is None:
                if unparsed is None:
                    received = self.events.consume(
                        batch_size=self.settings.batch_size, timeout_s=self._wait_s()
                    )
                    unparsed = received or None
                if unparsed is not None:
                    try:
                        pending = (self.events.parse_batch(unparsed), unparsed)
                    except DeadLetterError as exc:
                        stop.wait(self.kafka.failed(exc))
                        continue
                    unparsed = None
            if pending is not None:
                try:
                    recorded = self._database(partial(self._record_pending, pending))
                except DeadLetterError as exc:
                    stop.wait(self.kafka.failed(exc))  # recorded again: idempotent
                    continue
                if not recorded:
                    stop.wait(max(self.database.wait_s, 0.05))
                    continue
                pending = None
                last_activity = time.monotonic()
            report = self._database(lambda: self.notifier.send_due(limit=self.settings.send_burst))
            if report and (report.sent or report.failed):
                last_activity = time.monotonic()
            if (
                until_idle_s is not None
                and self._assigned
                and time.monotonic() - max(last_activity, self._assigned_at) > until_idle_s
                and self._database(self._nothing_owed) is True
                and self._group_caught_up()
            ):
                break

    def _group_caught_up(self) -> bool:
        """No record of the consumed topics left uncommitted by the group (any member)."""
        try:
            return self.events.caught_up()
        except KafkaException as exc:
            self.kafka.failed(exc)
            return False

    def _record_pending(self, pending: tuple[list[Consumed], list[Message]]) -> bool:
        self.record_and_commit(*pending)
        return True

    def _nothing_owed(self) -> bool:
        return self.notifier.seconds_to_next_send() is None

    def record_and_commit(self, parsed: list[Consumed], messages: list[Message]) -> None:
        report = self.notifier.record(parsed)
        self.events.dead_letter_refused(messages, report.refused)
        try:
            self.events.commit(messages)
        except KafkaException as exc:
            # Recorded already: the batch comes again after a rejoin or restart, and
            # recording it again changes nothing. Later commits move past it.
            self.kafka.failed(exc)
        else:
            self.kafka.succeeded()
        self.consumed += len(messages)

    def _database(self, work: Callable[[], T]) -> T | None:
        """Run `work` (one transaction, run again if PostgreSQL aborts it); None while
        PostgreSQL is away (said once; attempts back off until it is back)."""
        return run_while_up(self.database, work, what="notifier")

    def _wait_s(self) -> float:
        due_in = self._database(self.notifier.seconds_to_next_send)
        if due_in is None:
            return self.settings.poll_timeout_s
        return max(0.01, min(self.settings.poll_timeout_s, due_in))

    def _on_assign(self, _consumer: Any, _partitions: list[TopicPartition]) -> None:
        self._assigned = True
        # Idle counts from the assignment: a join that waited out a dead member's
        # session is not idleness, and its records may not be fetched yet.
        self._assigned_at = time.monotonic()

    def close(self) -> None:
        self.events.close()
        self.notifier.mailer.close()
