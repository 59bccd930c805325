"""Composes a relay process from its settings (the one place that does)."""

from __future__ import annotations

from services.relay.adapters.db import OutboxStore
from services.relay.adapters.kafka import KafkaPublisher, relay_producer_config
from services.relay.entrypoint import Relay
from services.relay.metrics import RelayMetrics
from services.relay.settings import RelaySettings
from services.relay.usecases import RelayUseCases


def build_relay(settings: RelaySettings | None = None) -> Relay:
    """A relay wired to PostgreSQL and Kafka as the settings say."""
    settings = settings or RelaySettings()
    config = relay_producer_config(
        settings, linger_ms=settings.linger_ms, delivery_timeout_s=settings.delivery_timeout_s
    )
    metrics = RelayMetrics()
    usecases = RelayUseCases(
        settings=settings,
        store=OutboxStore(settings.sync_database_url),
        publisher=KafkaPublisher(config, delivery_timeout_s=settings.delivery_timeout_s),
        metrics=metrics,
    )
    return Relay(settings=settings, usecases=usecases, metrics=metrics)
