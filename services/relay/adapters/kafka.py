"""Kafka side of the relay: produce a batch, wait for every delivery report."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from services.core import events, tracing
from services.core.kafka import producer_config
from services.core.settings import CommonSettings
from services.relay.domain import Delivery, OutboxRow


def relay_producer_config(
    settings: CommonSettings, *, linger_ms: int, delivery_timeout_s: float
) -> dict[str, Any]:
    """The shared idempotent acks=all murmur2_random config, tuned for batches."""
    return producer_config(
        settings,
        **{
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 200_000,
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            # fail fast on a dead broker rather than hiding it for minutes
            "reconnect.backoff.max.ms": 2000,
            "client.id": "relink-relay",
        },
    )


class KafkaPublisher:
    """Publishes outbox rows as CloudEvents in binary mode, keyed by tutor."""

    def __init__(self, config: dict[str, Any], *, delivery_timeout_s: float) -> None:
        self._config = config
        self._delivery_timeout_s = delivery_timeout_s
        self._producer = Producer(config)
        self.fatal_error: str | None = None

    def publish(self, rows: list[OutboxRow]) -> list[Delivery]:
        """Produce every row, wait for all acknowledgements, return them in row order."""
        answers: dict[int, str | None] = {}
        spans = _publish_spans(rows) if tracing.enabled() else {}

        for row in rows:
            message = events.outbox_message(
                event_id=row.event_id,
                event_type=row.event_type,
                aggregate_id=row.aggregate_id,
                payload=row.payload,
                headers=row.headers,
            )
            headers: list[tuple[str, str | bytes | None]] = list(message.headers.items())
            self._produce(row, message.key, message.value, headers, answers)

        # message.timeout.ms bounds every report; the margin covers the
        # broker's last answer arriving right at the deadline.
        self._producer.flush(self._delivery_timeout_s + 5.0)
        for row_id, span in spans.items():
            if answers.get(row_id, "no delivery report in time") is not None:
                tracing.failed(span, answers.get(row_id) or "no delivery report in time")
            span.end()
        return [
            Delivery(
                row_id=row.id,
                tutor_id=row.aggregate_id,
                error=answers.get(row.id, "no delivery report in time"),
            )
            for row in rows
        ]

    def _produce(
        self,
        row: OutboxRow,
        key: Any,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]],
        answers: dict[int, str | None],
    ) -> None:
        row_id = row.id

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            answers[row_id] = None if error is None else f"{error.name()}: {error.str()}"
            if error is not None and error.fatal():
                self.fatal_error = error.str()

        while True:
            try:
                self._producer.produce(
                    row.topic, key=key, value=value, headers=headers, on_delivery=on_delivery
                )
                return
            except BufferError:
                # the local queue is full: let librdkafka send and report
                self._producer.poll(0.05)

    def reset_if_fatal(self) -> bool:
        """Replace the producer after a fatal error (e.g. a fenced idempotent epoch)."""
        if self.fatal_error is None:
            return False
        self._producer.flush(1.0)
        self._producer = Producer(self._config)
        self.fatal_error = None
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        self._producer.flush(timeout_s)


def _publish_spans(rows: list[OutboxRow]) -> dict[int, tracing.Span]:
    """A PRODUCER span per row that carries a trace, child of the context it was written in.

    The message's `ce_traceparent` stays the row's (the event's creation context, which
    the CloudEvents distributed-tracing extension says no hop changes).
    """
    spans: dict[int, tracing.Span] = {}
    for row in rows:
        if row.headers.get(tracing.TRACEPARENT):
            spans[row.id] = tracing.start_span(
                f"publish {row.event_type}",
                parent=row.headers,
                kind=tracing.SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.destination.name": row.topic,
                    "messaging.message.id": str(row.event_id),
                    "cloudevents.event_type": row.event_type,
                },
            )
    return spans
