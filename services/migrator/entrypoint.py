"""The Faust app (entrypoint): the agent on `provider.switched`, the executor task, the sweep.

Thin: the agent parses each message with the events module, hands the event
to `MigrationService.handle`, and sends what cannot be parsed (or names an
unknown switch) to the dead-letter topic. Agent concurrency stays 1 so a
tutor's events are handled in their partition order.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import faust
from sqlalchemy.exc import DBAPIError

from services.core import events
from services.core.kafka import faust_broker_options
from services.core.logs import get_logger
from services.migrator.adapters.db.group_commit import aborted_to_retry
from services.migrator.bootstrap import Migrator
from services.migrator.errors import MigratorError

log = get_logger(__name__)


async def _handle(migrator: Migrator, event: events.Event, *, attempts: int = 5) -> None:
    """Handle one event; a transaction PostgreSQL aborted as a deadlock is simply run again.

    Every handler is idempotent, so running it again is safe; without this the
    agent would crash on a rare lock race and the event wait for a restart.
    """
    for attempt in range(1, attempts + 1):
        try:
            await migrator.service.handle(event)
            return
        except DBAPIError as exc:
            sqlstate = aborted_to_retry(exc)
            if sqlstate is None or attempt == attempts:
                raise
            log.warning("transaction aborted (%s); handling %s again", sqlstate, event.id)
            await asyncio.sleep(0.05 * attempt)


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

    @app.agent(source, concurrency=1)
    async def switches(stream: Any) -> None:
        async for message_event in stream.events():
            message = message_event.message
            headers = list(message.headers or [])
            try:
                event = events.parse_message(key=message.key, value=message.value, headers=headers)
                await _handle(migrator, event)
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
    async def sweep() -> None:
        added = await migrator.service.sweep(window_s=settings.sweep_window_h * 3600)
        if added:
            log.info("sweep planned %d sessions left behind", added)

    @app.timer(interval=settings.sweep_interval_s)  # type: ignore[untyped-decorator]
    async def auto_retry() -> None:
        queued = await migrator.service.auto_retry(
            max_retries=settings.auto_retries,
            after=timedelta(seconds=settings.auto_retry_after_s),
        )
        if queued:
            log.info("queued %d retryable failures again", queued)

    @app.timer(interval=settings.cleanup_interval_s)  # type: ignore[untyped-decorator]
    async def grace_period() -> None:
        resumed = await migrator.rollbacks.resume()
        if resumed:
            log.info("resumed %d unfinished rollbacks", resumed)
        await migrator.rollbacks.cleanup()

    @app.on_before_shutdown.connect
    async def close(*_: Any, **__: Any) -> None:
        await migrator.executor.stop()

    return app
