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

from confluent_kafka import Message, TopicPartition
from sqlalchemy.exc import InterfaceError, OperationalError

from services.core.logs import get_logger
from services.notifier.adapters.kafka import NotifierEvents
from services.notifier.domain import Consumed
from services.notifier.settings import NotifierSettings
from services.notifier.usecases.notify import Notifier

log = get_logger(__name__)
T = TypeVar("T")
# How long to wait before trying PostgreSQL again with a batch in hand.
DATABASE_RETRY_S = 1.0


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

    def run(self, *, stop: threading.Event, until_idle_s: float | None = None) -> None:
        """Consume, record, send, until `stop` is set (or idle that long, for scripts).

        While PostgreSQL is unreachable the consumed batch is kept (its offsets
        uncommitted) and retried; the loop never exits over a database restart.
        """
        self.events.subscribe(on_assign=self._on_assign)
        last_activity = time.monotonic()
        pending: tuple[list[Consumed], list[Message]] | None = None
        while not stop.is_set():
            if pending is None:
                received = self.events.consume(
                    batch_size=self.settings.batch_size, timeout_s=self._wait_s()
                )
                if received:
                    pending = (self.events.parse_batch(received), received)
            if pending is not None:
                if not self._database(partial(self._record_pending, pending)):
                    stop.wait(DATABASE_RETRY_S)
                    continue
                pending = None
                last_activity = time.monotonic()
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

    def _record_pending(self, pending: tuple[list[Consumed], list[Message]]) -> bool:
        self.record_and_commit(*pending)
        return True

    def _nothing_owed(self) -> bool:
        return self.notifier.seconds_to_next_send() is None

    def record_and_commit(self, parsed: list[Consumed], messages: list[Message]) -> None:
        report = self.notifier.record(parsed)
        self.events.dead_letter_refused(messages, report.refused)
        self.events.commit(messages)
        self.consumed += len(messages)

    def _database(self, work: Callable[[], T]) -> T | None:
        """Run `work`; on a lost database connection log it and return None."""
        try:
            return work()
        except (OperationalError, InterfaceError) as exc:
            log.warning("database unavailable, will retry: %s", type(exc).__name__)
            return None

    def _wait_s(self) -> float:
        due_in = self._database(self.notifier.seconds_to_next_send)
        if due_in is None:
            return self.settings.poll_timeout_s
        return max(0.01, min(self.settings.poll_timeout_s, due_in))

    def _on_assign(self, _consumer: Any, _partitions: list[TopicPartition]) -> None:
        self._assigned = True

    def close(self) -> None:
        self.events.close()
        self.notifier.mailer.close()
