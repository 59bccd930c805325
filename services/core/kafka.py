"""Kafka helpers every process shares: client configs and topic creation."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from services.core.errors import RelinkError
from services.core.logs import throttle
from services.core.settings import CommonSettings

# librdkafka's default partitioner (consistent_random, CRC32) differs from the
# Java client's and aiokafka's murmur2; every relink producer uses murmur2 so a
# tutor's key lands on the same partition whichever client wrote it.
PARTITIONER = "murmur2_random"


# Warnings librdkafka prints while a broker that just started finishes loading, and
# then retries on its own: not something wrong, so DEBUG. Anything else keeps its level.
TRANSIENT_START_WARNINGS = (
    "Failed to acquire idempotence PID",  # the transaction coordinator is still loading
)


class _QuietTransientStartWarnings(logging.Filter):
    """Lower librdkafka's transient start-up warnings to DEBUG (shown only at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not any(w in message for w in TRANSIENT_START_WARNINGS) or "retrying" not in message:
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


# Where librdkafka's own lines go (instead of its stderr), and aiokafka's (Faust's
# client) loggers: during a broker outage both log every reconnect attempt, several
# times a second; throttled, the outage shows once a minute per kind of line.
CLIENT_LOGGER = "services.core.kafka.client"
AIOKAFKA_LOGGERS = (
    "aiokafka",
    "aiokafka.cluster",
    "aiokafka.conn",
    "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.producer",
    "aiokafka.producer.sender",
)


def client_logger() -> logging.Logger:
    """The logger librdkafka clients log to: transient start-up warnings at DEBUG, the rest
    throttled (`core.logs.Throttle`), in the processes' own format and level."""
    logger = logging.getLogger(CLIENT_LOGGER)
    if not any(isinstance(f, _QuietTransientStartWarnings) for f in logger.filters):
        logger.addFilter(_QuietTransientStartWarnings())
    throttle((CLIENT_LOGGER,))
    return logger


# the name the start-up log tests know it by
LIBRDKAFKA_LOGGER = CLIENT_LOGGER
librdkafka_logger = client_logger


def throttle_aiokafka() -> None:
    """Throttle the reconnect chatter of Faust's Kafka client (the migrator's)."""
    throttle(AIOKAFKA_LOGGERS)


class TopicCreationError(RelinkError):
    """A topic could not be created (other than because it already exists)."""


def client_config(settings: CommonSettings) -> dict[str, Any]:
    """Where the brokers are and how to authenticate to them, for any librdkafka client.

    The one place KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, the SASL
    credentials and the TLS files become client settings; every producer,
    consumer and admin client of relink starts from it (Faust's from
    `faust_broker_options`).
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol.lower(),
    }
    if settings.kafka_uses_sasl:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password
    if settings.kafka_uses_tls:
        for key, value in (
            ("ssl.ca.location", settings.kafka_ssl_ca_location),
            ("ssl.certificate.location", settings.kafka_ssl_certificate_location),
            ("ssl.key.location", settings.kafka_ssl_key_location),
            ("ssl.key.password", settings.kafka_ssl_key_password),
        ):
            if value:
                config[key] = value
    return config


def faust_broker_options(settings: CommonSettings) -> dict[str, Any]:
    """The same connection settings as `client_config`, as `faust.App` keyword arguments."""
    import ssl

    import faust

    options: dict[str, Any] = {"broker": f"kafka://{settings.kafka_bootstrap_servers}"}
    context: ssl.SSLContext | None = None
    if settings.kafka_uses_tls:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_location or None)
        if settings.kafka_ssl_certificate_location:
            context.load_cert_chain(
                settings.kafka_ssl_certificate_location,
                settings.kafka_ssl_key_location or None,
                settings.kafka_ssl_key_password or None,
            )
    if settings.kafka_uses_sasl:
        options["broker_credentials"] = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    elif context is not None:
        options["broker_credentials"] = faust.SSLCredentials(context)
    return options


def admin_client(settings: CommonSettings, **overrides: Any) -> Any:
    """A confluent-kafka AdminClient on the settings' brokers and credentials."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({**client_config(settings), **overrides})


def producer_config(settings: CommonSettings, **overrides: Any) -> dict[str, Any]:
    """An idempotent, acks=all producer that partitions like the Java client."""
    config: dict[str, Any] = {
        **client_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": PARTITIONER,
        # No compression by default: aiokafka (and so Faust) needs extra
        # libraries to read lz4/zstd batches, and downstream teams may lack them.
        "compression.type": "none",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "logger": client_logger(),
    }
    config.update(overrides)
    return config


def consumer_config(settings: CommonSettings, *, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that commits only when told (after its effects are durable)."""
    config: dict[str, Any] = {
        **client_config(settings),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "logger": client_logger(),
    }
    config.update(overrides)
    return config


def create_topics(
    settings: CommonSettings,
    *,
    names: Iterable[str] | None = None,
    partitions: int | None = None,
    extra_config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create relink's topics (infinite retention) if missing; return the ones created."""
    from confluent_kafka import KafkaException
    from confluent_kafka.cimpl import NewTopic

    admin = admin_client(settings)
    wanted = list(names) if names is not None else settings.topics
    existing = set(admin.list_topics(timeout=timeout).topics)
    config = {"retention.ms": "-1", "retention.bytes": "-1"}
    if settings.topic_min_insync_replicas:
        config["min.insync.replicas"] = str(settings.topic_min_insync_replicas)
    config.update(extra_config or {})
    new = [
        NewTopic(
            name,
            num_partitions=partitions or settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            config=config,
        )
        for name in wanted
        if name not in existing
    ]
    if not new:
        return []
    created: list[str] = []
    deadline = time.monotonic() + timeout
    while new:
        retry: list[Any] = []
        by_name = {topic.topic: topic for topic in new}
        for name, future in admin.create_topics(new, operation_timeout=timeout).items():
            try:
                future.result(timeout=timeout)
                created.append(name)
            except KafkaException as exc:
                code = getattr(exc.args[0], "name", lambda: "")() if exc.args else ""
                if code == "TOPIC_ALREADY_EXISTS":
                    continue
                # A broker that has just (re)started answers metadata requests a
                # moment before it is unfenced and can host replicas.
                if code == "INVALID_REPLICATION_FACTOR" and time.monotonic() < deadline:
                    retry.append(by_name[name])
                    continue
                if code in ("TOPIC_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED"):
                    raise TopicCreationError(
                        f"topic {name} is missing (or not visible to Kafka user "
                        f"{settings.kafka_sasl_username or '(none)'}), and this user may not "
                        "create topics: create them with `relink kafka topics` as an admin user"
                    ) from exc
                raise TopicCreationError(f"could not create topic {name}: {exc}") from exc
        if retry:
            time.sleep(0.25)
        new = retry
    _wait_for_leaders(admin, created, timeout=timeout)
    return created


def _wait_for_leaders(admin: Any, names: list[str], *, timeout: float) -> None:
    """Block until every new partition has a leader, so the first produce does not fail."""
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout).topics
        for name in list(pending):
            meta = topics.get(name)
            if (
                meta is not None
                and meta.partitions
                and all(p.leader >= 0 for p in meta.partitions.values())
            ):
                pending.discard(name)
        if pending:
            time.sleep(0.05)
    if pending:
        raise TopicCreationError(f"topics without a leader after {timeout}s: {sorted(pending)}")


def delete_topics(settings: CommonSettings, names: Iterable[str], *, timeout: float = 30.0) -> None:
    """Delete topics (tests clean up after themselves)."""
    admin = admin_client(settings)
    names = list(names)
    if not names:
        return
    for future in admin.delete_topics(names, operation_timeout=timeout).values():
        # already gone is fine when cleaning up
        with contextlib.suppress(Exception):
            future.result(timeout=timeout)
