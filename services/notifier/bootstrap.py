"""Composes a notifier process from its settings (the one place that does)."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer

from services.core.db.engine import make_engine
from services.core.kafka import consumer_config, producer_config
from services.notifier.consumer import NotifierLoop
from services.notifier.mailer import Mailer, SmtpMailer
from services.notifier.service import Notifier
from services.notifier.settings import NotifierSettings
from services.notifier.store import NotifierStore


def build_notifier(
    settings: NotifierSettings | None = None, *, mailer: Mailer | None = None
) -> Notifier:
    """The notifier's use cases wired to PostgreSQL and SMTP."""
    settings = settings or NotifierSettings()
    return Notifier(
        store=NotifierStore(make_engine(settings.sync_database_url)),
        mailer=mailer or SmtpMailer(settings),
        settings=settings,
    )


def build_loop(settings: NotifierSettings | None = None) -> NotifierLoop:
    """The whole `relink notifier` process: consumer, dead-letter producer, notifier."""
    settings = settings or NotifierSettings()
    return NotifierLoop(
        notifier=build_notifier(settings),
        consumer=Consumer(
            consumer_config(
                settings,
                group_id=settings.group_id,
                **{
                    "client.id": "relink-notifier",
                    "session.timeout.ms": int(settings.session_timeout_s * 1000),
                },
            )
        ),
        dead_letters=Producer(producer_config(settings, **{"client.id": "relink-notifier-dlq"})),
        settings=settings,
    )
