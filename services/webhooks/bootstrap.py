"""Composes the webhook dispatcher and its commands from settings (the one place that does)."""

from __future__ import annotations

from confluent_kafka import Consumer

from services.core.db.engine import make_engine, make_session_factory
from services.core.kafka import consumer_config
from services.webhooks.adapters.db import WebhooksDb
from services.webhooks.adapters.http import WebhookSender
from services.webhooks.adapters.kafka import WebhookEvents
from services.webhooks.entrypoint import WebhooksLoop
from services.webhooks.settings import WebhooksSettings
from services.webhooks.usecases.dispatch import Dispatcher
from services.webhooks.usecases.endpoints import Endpoints


def _db(settings: WebhooksSettings) -> WebhooksDb:
    return WebhooksDb(make_session_factory(make_engine(settings.sync_database_url)))


def build_dispatcher(settings: WebhooksSettings | None = None) -> Dispatcher:
    settings = settings or WebhooksSettings()
    return Dispatcher(
        db=_db(settings),
        sender=WebhookSender(timeout_s=settings.timeout_s),
        cipher=settings.token_cipher(),
        settings=settings,
    )


def build_loop(settings: WebhooksSettings | None = None) -> WebhooksLoop:
    """The whole `relink webhooks` process."""
    settings = settings or WebhooksSettings()
    consumer = Consumer(
        consumer_config(
            settings,
            group_id=settings.group_id,
            **{
                "client.id": "relink-webhooks",
                "session.timeout.ms": int(settings.session_timeout_s * 1000),
                "max.poll.interval.ms": int(settings.max_poll_interval_s * 1000),
            },
        )
    )
    return WebhooksLoop(
        dispatcher=build_dispatcher(settings),
        events=WebhookEvents(consumer=consumer, settings=settings),
        settings=settings,
    )


def build_endpoints(settings: WebhooksSettings | None = None) -> Endpoints:
    """`relink webhooks endpoints|replay|log`."""
    settings = settings or WebhooksSettings()
    return Endpoints(db=_db(settings), cipher=settings.token_cipher(), dev_mode=settings.dev_mode)
