"""The dispatcher's process loop: Kafka in, deliveries recorded, offsets out, webhooks sent.

Per batch: parse, record the deliveries it owes in one transaction, then commit the
offsets synchronously. Between batches, due deliveries are sent (`send_burst` per turn).
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
from services.webhooks.adapters.kafka import WebhookEvents
from services.webhooks.settings import WebhooksSettings
from services.webhooks.usecases.dispatch import Dispatcher

log = get_logger(__name__)
T = TypeVar("T")


class WebhooksLoop:
    """Consumes relink's topics in the dispatcher's own group and delivers webhooks."""

    def __init__(
        self, *, dispatcher: Dispatcher, events: WebhookEvents, settings: WebhooksSettings
    ) -> None:
        self.dispatcher = dispatcher
        self.events = events
        self.settings = settings
        self._assigned = False
        self.database = Outage("PostgreSQL", log=log)
        self.kafka = Outage("Kafka (offsets)", log=log)

    def run(self, *, stop: threading.Event, until_idle_s: float | None = None) -> None:
        """Consume, record, deliver until `stop` is set (or idle that long, for scripts).

        While PostgreSQL is away the consumed batch is kept (offsets uncommitted) and
        recorded again once it is back; an offset commit Kafka refuses is left to a later
        one (recording a batch again changes nothing).
        """
        self.events.subscribe(on_assign=self._on_assign)
        last_activity = time.monotonic()
        pending: list[Message] | None = None
        while not stop.is_set():
            if pending is None:
                received = self.events.consume(
                    batch_size=self.settings.batch_size, timeout_s=self._wait_s()
                )
                if received:
                    pending = received
            if pending is not None:
                if self._database(partial(self._record, pending)) is None:
                    stop.wait(max(self.database.wait_s, 0.05))
                    continue
                self._commit(pending)
                pending = None
                last_activity = time.monotonic()
            report = self._database(
                lambda: self.dispatcher.deliver_due(
                    limit=self.settings.send_burst, budget_s=self.settings.send_budget_s
                )
            )
            if report and (report.delivered or report.retrying or report.failed):
                last_activity = time.monotonic()
            if (
                until_idle_s is not None
                and self._assigned
                and time.monotonic() - last_activity > until_idle_s
                and self._database(self.dispatcher.seconds_to_next_send) is None
                and self.database.due()
            ):
                break

    def _record(self, messages: list[Message]) -> int:
        return self.dispatcher.record(self.events.parse(messages))

    def _commit(self, messages: list[Message]) -> None:
        try:
            self.events.commit(messages)
        except KafkaException as exc:
            self.kafka.failed(exc)
        else:
            self.kafka.succeeded()

    def _database(self, work: Callable[[], T]) -> T | None:
        """Run `work` (one transaction, run again if PostgreSQL aborts it); None while
        PostgreSQL is away (said once; attempts back off until it is back)."""
        return run_while_up(self.database, work, what="webhooks")

    def _wait_s(self) -> float:
        due_in = self._database(self.dispatcher.seconds_to_next_send)
        if due_in is None:
            return self.settings.poll_timeout_s
        return max(0.01, min(self.settings.poll_timeout_s, due_in))

    def _on_assign(self, _consumer: Any, _partitions: list[TopicPartition]) -> None:
        self._assigned = True

    def close(self) -> None:
        self.events.close()
        self.dispatcher.sender.close()
