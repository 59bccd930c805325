"""Kafka of the webhook dispatcher: its own consumer group on the topics the notifier
reads, parsing, and synchronous offset commits (one past the last message of each partition).

A message that does not parse is skipped with a warning: the notifier, reading the
same topics, sends it to the dead-letter topic; there is nothing to sign for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from services.core import events
from services.core.logs import get_logger
from services.core.settings import CommonSettings

log = get_logger(__name__)


def event_topics(settings: CommonSettings) -> list[str]:
    """Every topic relink's events are published to (services.core.events.topic_for)."""
    return [
        settings.topic_provider_switched,
        settings.topic_session_migrated,
        settings.topic_session_failed,
    ]


@dataclass(frozen=True, slots=True)
class Received:
    """A parsed event and where it was read."""

    event: events.Event
    topic: str
    partition: int
    offset: int


class WebhookEvents:
    """The dispatcher's consumer."""

    def __init__(self, *, consumer: Consumer, settings: CommonSettings) -> None:
        self.consumer = consumer
        self.settings = settings

    def subscribe(self, on_assign: Callable[[Any, list[TopicPartition]], None]) -> None:
        self.consumer.subscribe(event_topics(self.settings), on_assign=on_assign)

    def consume(self, *, batch_size: int, timeout_s: float) -> list[Message]:
        messages = self.consumer.consume(num_messages=batch_size, timeout=timeout_s)
        return [m for m in messages if not _log_error(m)]

    def parse(self, messages: list[Message]) -> list[Received]:
        parsed = []
        for message in messages:
            try:
                event = events.parse_message(
                    key=message.key(),
                    value=message.value(),
                    headers=cast("list[tuple[str, bytes | None]]", message.headers() or []),
                )
            except events.InvalidEvent as exc:
                log.warning(
                    "skipped %s[%s]@%s: %s (the notifier dead-letters it)",
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    exc.reason,
                )
                continue
            parsed.append(
                Received(
                    event, message.topic() or "", message.partition() or 0, message.offset() or 0
                )
            )
        return parsed

    def commit(self, messages: list[Message]) -> None:
        highest: dict[tuple[str, int], int] = {}
        for message in messages:
            key = (message.topic() or "", message.partition() or 0)
            highest[key] = max(highest.get(key, -1), message.offset() or 0)
        self.consumer.commit(
            offsets=[TopicPartition(t, p, o + 1) for (t, p), o in highest.items()],
            asynchronous=False,
        )

    def close(self) -> None:
        self.consumer.close()


def _log_error(message: Message) -> bool:
    error = message.error()
    if error is None:
        return False
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error: %s", error)
    return True
