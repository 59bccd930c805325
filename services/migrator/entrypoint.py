"""The Faust app (entrypoint): the agent on `provider.switched`, the executor task, the sweep.

Thin: the agent parses each message with the events module, hands the event
to `MigrationService.handle`, and sends what cannot be parsed (or names an
unknown switch) to the dead-letter topic. Agent concurrency stays 1 so a
tutor's events are handled in their partition order.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import faust

from services.core import events, metrics, tracing, tracking
from services.core.backoff import Outage
from services.core.db.errors import StoreError, run_again_async
from services.core.kafka import faust_broker_options
from services.core.logs import get_logger
from services.migrator.bootstrap import Migrator
from services.migrator.errors import MigratorError

log = get_logger(__name__)


async def _handle(
    migrator: Migrator,
    event: events.Event,
    *,
    outage: Outage,
    delivery: tracking.Delivery | None = None,
) -> None:
    """Handle one event; PostgreSQL's weather never crashes the agent.

    A transaction PostgreSQL aborted as a conflict runs again at once (every
    handler is idempotent). While PostgreSQL is away the event waits, its
    offset not committed, and is handled again with backoff until it goes through.
    """
    while True:
        try:
            await run_again_async(
                lambda: migrator.service.handle(event, delivery),
                what="handling an event",
                event_id=event.id,
            )
        except StoreError as exc:
            await asyncio.sleep(outage.failed(exc))
            continue
        outage.succeeded()
        return


def _rides_out(
    outage: Outage,
) -> Callable[[Callable[[], Awaitable[None]]], Callable[[], Awaitable[None]]]:
    """A timer's round that PostgreSQL's weather never crashes.

    While PostgreSQL is away (or aborts the round as a conflict: a round is
    several transactions and provider calls, not one to run again) rounds
    are skipped, backing off, and this is logged once when it starts and once
    when it ends. A Faust timer that raises stops the whole worker.
    """

    def wrap(work: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        @functools.wraps(work)
        async def round_() -> None:
            if not outage.due():
                return
            try:
                await work()
            except StoreError as exc:
                outage.failed(exc)
                return
            outage.succeeded()

        return round_

    return wrap


def _span_attributes(message: Any, event: events.Event) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.destination.name": message.topic,
        "messaging.kafka.destination.partition": message.partition,
        "messaging.kafka.message.offset": message.offset,
        "cloudevents.event_id": event.id,
        "cloudevents.event_type": event.type,
    }
    if "switch_id" in event.data:
        attributes["relink.switch_id"] = str(event.data["switch_id"])
    return attributes


def create_app(migrator: Migrator) -> faust.App:
    """A Faust app wired to one composed `Migrator`."""
    settings = migrator.settings
    app = faust.App(
        settings.faust_app_id,
        # bootstrap servers, SASL and TLS: the same settings every relink client reads
        **faust_broker_options(settings),
        datadir=str(settings.datadir),
        web_enabled=False,
        # No leader topic: the migrator has no tables or leader-only timers.
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
    )
    source = app.topic(
        settings.topic_provider_switched, key_serializer="raw", value_serializer="raw"
    )
    dead_letters = app.topic(
        settings.topic_dead_letter, key_serializer="raw", value_serializer="raw"
    )
    # One view of PostgreSQL per loop: each says once when it is lost and once when back.
    events_db = Outage("PostgreSQL (events)", log=log)
    skipped = events.SkipCounts()

    @app.agent(source, concurrency=1)
    async def switches(stream: Any) -> None:
        async for message_event in stream.events():
            message = message_event.message
            headers = list(message.headers or [])
            try:
                event = events.parse_message(key=message.key, value=message.value, headers=headers)
                delivery = tracking.Delivery.of(
                    tracking.MIGRATOR,
                    event,
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                )
                with tracing.span(
                    f"process {event.type}",
                    parent=event.trace,
                    kind=tracing.SpanKind.CONSUMER,
                    attributes=_span_attributes(message, event),
                ):
                    if event.type == events.EventType.PROVIDER_SWITCHED:
                        # the switch's trace, for every row written for it from now on
                        tracing.SWITCHES.remember(event.data["switch_id"], tracing.carrier())
                    await _handle(migrator, event, outage=events_db, delivery=delivery)
            except events.SkippedEvent as exc:
                # Not broken, not ours (another type, another version): a tolerant
                # reader counts it, says so and reads on; nothing is dead-lettered.
                log.info(
                    "skipped %s/%s@%s (%s, %d so far): %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    exc.reason,
                    skipped.add(exc),
                    exc.detail,
                )
            except (events.InvalidEvent, MigratorError) as exc:
                reason: Any = exc if isinstance(exc, events.InvalidEvent) else exc.reason  # type: ignore[attr-defined]
                letter = events.dead_letter(
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    key=message.key,
                    value=message.value,
                    headers=headers,
                    error=reason,
                    dead_letter_topic=dead_letters.get_topic_name(),
                )
                await dead_letters.send(key=letter.key, value=letter.value, headers=letter.headers)
                metrics.DEAD_LETTERS.labels(
                    process="migrator", reason=getattr(reason, "reason", str(reason))
                ).inc()
                log.warning(
                    "dead-lettered %s/%s@%s: %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    exc,
                )

    @app.task  # type: ignore[untyped-decorator]
    async def executor() -> None:
        await migrator.executor.run()

    @app.timer(interval=settings.sweep_interval_s)  # type: ignore[untyped-decorator]
    @_rides_out(Outage("PostgreSQL (sweep)", log=log))
    async def sweep() -> None:
        added = await migrator.service.sweep(window_s=settings.sweep_window_h * 3600)
        if added:
            log.info("sweep planned %d sessions left behind", added)

    @app.timer(interval=settings.unhandled_after_s / 3)  # type: ignore[untyped-decorator]
    @_rides_out(Outage("PostgreSQL (catch-up)", log=log))
    async def catch_up() -> None:
        await migrator.service.catch_up(
            older_than=timedelta(seconds=settings.unhandled_after_s),
            window=timedelta(hours=settings.sweep_window_h),
        )

    @app.timer(interval=settings.sweep_interval_s)  # type: ignore[untyped-decorator]
    @_rides_out(Outage("PostgreSQL (automatic retries)", log=log))
    async def auto_retry() -> None:
        queued = await migrator.service.auto_retry(
            max_retries=settings.auto_retries,
            after=timedelta(seconds=settings.auto_retry_after_s),
        )
        if queued:
            log.info("queued %d retryable failures again", queued)

    @app.timer(interval=settings.cleanup_interval_s)  # type: ignore[untyped-decorator]
    @_rides_out(Outage("PostgreSQL (rollbacks and cleanup)", log=log))
    async def grace_period() -> None:
        resumed = await migrator.rollbacks.resume()
        if resumed:
            log.info("resumed %d unfinished rollbacks", resumed)
        await migrator.rollbacks.cleanup()

    @app.on_before_shutdown.connect
    async def close(*_: Any, **__: Any) -> None:
        await migrator.executor.stop()

    return app
