"""Composes a notifier process from its settings (the one place that does)."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer

from services.core.db.engine import make_engine, make_session_factory
from services.core.kafka import consumer_config, producer_config
from services.core.settings import CommonSettings
from services.notifier.adapters.db import AuditBulkStore, NotifierDb
from services.notifier.adapters.kafka import AuditTopicReader, NotifierEvents
from services.notifier.adapters.smtp import Mailer, SmtpMailer
from services.notifier.entrypoint import NotifierLoop
from services.notifier.settings import NotifierSettings
from services.notifier.usecases.audit import AuditTrail
from services.notifier.usecases.notify import Notifier


def _db(settings: CommonSettings) -> NotifierDb:
    return NotifierDb(make_session_factory(make_engine(settings.sync_database_url)))


def build_notifier(
    settings: NotifierSettings | None = None, *, mailer: Mailer | None = None
) -> Notifier:
    """The notifier's use cases wired to PostgreSQL and SMTP."""
    settings = settings or NotifierSettings()
    return Notifier(db=_db(settings), mailer=mailer or SmtpMailer(settings), settings=settings)


def build_loop(settings: NotifierSettings | None = None) -> NotifierLoop:
    """The whole `relink notifier` process: consumer, dead-letter producer, notifier."""
    settings = settings or NotifierSettings()
    return NotifierLoop(
        notifier=build_notifier(settings),
        events=NotifierEvents(
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
            dead_letters=Producer(
                producer_config(settings, **{"client.id": "relink-notifier-dlq"})
            ),
            settings=settings,
        ),
        settings=settings,
    )


def build_audit(settings: CommonSettings | None = None) -> AuditTrail:
    """`relink audit show|replay`: the topics' reader, the bulk writer, the store."""
    settings = settings or NotifierSettings()
    return AuditTrail(
        reader=AuditTopicReader(settings),
        bulk=AuditBulkStore(settings.sync_database_url),
        db=_db(settings),
    )
