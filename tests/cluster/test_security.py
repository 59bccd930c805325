"""The secured cluster refuses who it does not know and what a user may not do.

Each refusal is the broker's answer to a real client built by relink's own
config functions (`services.core.kafka`), with the users `relink dev up
--brokers 3` makes; and each case checks that nothing got through (the topic
stays empty), read back as the admin.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from services.core.kafka import consumer_config, create_topics, producer_config
from services.core.settings import CommonSettings
from tests.cluster.conftest import service_settings

pytestmark = pytest.mark.cluster

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class
    from tests.conftest import TestInfrastructure


def _produce(settings: CommonSettings, topic: str) -> tuple[KafkaError | None, list[KafkaError]]:
    """Produce one record; the delivery report's error and the client's errors."""
    errors: list[KafkaError] = []
    report: list[KafkaError | None] = []
    producer = Producer(
        producer_config(
            settings, **{"message.timeout.ms": 10_000, "error_cb": errors.append, "log_level": 0}
        )
    )
    producer.produce(topic, key=b"k", value=b"forged", on_delivery=lambda e, _m: report.append(e))
    try:
        producer.flush(20)
    except KafkaException as fatal:
        # A user with Write on no topic at all may be refused the idempotent
        # producer's id first (InitProducerId: CLUSTER_AUTHORIZATION_FAILED), a
        # fatal error raised here instead of a delivery report.
        return fatal.args[0], errors
    assert report, "no delivery report"
    return report[0], errors


def _consume(settings: CommonSettings, topic: str, group: str) -> list[Any]:
    """Subscribe and poll for a while: the records read, or the errors answered."""
    consumer = Consumer(consumer_config(settings, group_id=group, **{"log_level": 0}))
    consumer.subscribe([topic])
    seen: list[Any] = []
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            seen.append(message.error() or message.value())
            break
    finally:
        consumer.close()
    return seen


def _records_on(admin: CommonSettings, topic: str) -> int:
    consumer = Consumer(consumer_config(admin, group_id=f"check-{uuid.uuid4().hex[:6]}"))
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def test_the_relay_user_publishes_and_the_consumers_read_in_their_groups(
    devstack: TestInfrastructure, topic_prefix: str, admin_settings: CommonSettings
) -> None:
    """What the ACLs allow works (so the refusals below are the ACLs, not a broken cluster)."""
    relay = service_settings(devstack, topic_prefix, "relay")
    error, _ = _produce(relay, relay.topic_provider_switched)
    assert error is None
    migrator = service_settings(devstack, topic_prefix, "migrator")
    assert _consume(
        migrator, migrator.topic_provider_switched, f"{topic_prefix}relink-migrator"
    ) == [b"forged"]
    assert _records_on(admin_settings, admin_settings.topic_provider_switched) == 1
    webhooks = service_settings(devstack, topic_prefix, "webhooks")
    assert _consume(
        webhooks, webhooks.topic_provider_switched, f"{topic_prefix}relink-webhooks"
    ) == [b"forged"]


@pytest.mark.parametrize("password", ["wrong-password", ""])
def test_a_client_with_wrong_credentials_is_refused(
    devstack: TestInfrastructure, topic_prefix: str, admin_settings: CommonSettings, password: str
) -> None:
    relay = service_settings(devstack, topic_prefix, "relay")
    if password:
        relay = relay.model_copy(update={"kafka_sasl_password": password})
    else:
        # no SASL at all: a plaintext client on the SASL listeners
        relay = relay.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    error, errors = _produce(relay, relay.topic_provider_switched)
    assert error is not None and error.code() == KafkaError._MSG_TIMED_OUT
    if password:
        assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert _records_on(admin_settings, admin_settings.topic_provider_switched) == 0


def test_an_unknown_user_is_refused(
    devstack: TestInfrastructure, topic_prefix: str, admin_settings: CommonSettings
) -> None:
    stranger = service_settings(devstack, topic_prefix, "relay").model_copy(
        update={"kafka_sasl_username": "mallory"}
    )
    error, errors = _produce(stranger, stranger.topic_provider_switched)
    assert error is not None
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert _records_on(admin_settings, admin_settings.topic_provider_switched) == 0


@pytest.mark.parametrize(
    ("user", "topic"),
    [
        # the gateway has no topic rights at all
        ("gateway", "provider.switched"),
        # a consumer forging the events others act on (issue 18's forged session.migrated)
        ("notifier", "session.migrated"),
        ("migrator", "provider.switched"),
        ("migrator", "session.migrated"),
        # the relay publishes events, never dead letters
        ("relay", "relink.dead-letter"),
        # the webhooks dispatcher only reads
        ("webhooks", "provider.switched"),
        ("webhooks", "relink.dead-letter"),
    ],
)
def test_a_user_producing_outside_its_acls_is_refused(
    devstack: TestInfrastructure,
    topic_prefix: str,
    admin_settings: CommonSettings,
    user: str,
    topic: str,
) -> None:
    settings = service_settings(devstack, topic_prefix, user)
    error, _ = _produce(settings, f"{topic_prefix}{topic}")
    refusals = {KafkaError.TOPIC_AUTHORIZATION_FAILED}
    if user in ("gateway", "webhooks"):  # no Write anywhere: maybe refused its producer id
        refusals.add(KafkaError.CLUSTER_AUTHORIZATION_FAILED)
    assert error is not None and error.code() in refusals, error
    assert _records_on(admin_settings, f"{topic_prefix}{topic}") == 0


@pytest.mark.parametrize(
    ("user", "topic", "group", "refusal"),
    [
        # the relay only produces
        ("relay", "provider.switched", "relink-migrator", KafkaError.GROUP_AUTHORIZATION_FAILED),
        ("gateway", "provider.switched", "relink-migrator", KafkaError.GROUP_AUTHORIZATION_FAILED),
        # a consumer only in its own group ...
        ("migrator", "provider.switched", "relink-notifier", KafkaError.GROUP_AUTHORIZATION_FAILED),
        # ... and only on its own topics
        ("migrator", "session.migrated", "relink-migrator", KafkaError.TOPIC_AUTHORIZATION_FAILED),
        (
            "notifier",
            "relink.dead-letter",
            "relink-notifier",
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
        ),
        # the webhooks dispatcher: its own group, the event topics only
        ("webhooks", "session.migrated", "relink-notifier", KafkaError.GROUP_AUTHORIZATION_FAILED),
        (
            "webhooks",
            "relink.dead-letter",
            "relink-webhooks",
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
        ),
    ],
)
def test_a_user_consuming_outside_its_acls_is_refused(
    devstack: TestInfrastructure,
    topic_prefix: str,
    admin_settings: CommonSettings,
    user: str,
    topic: str,
    group: str,
    refusal: int,
) -> None:
    # something to read, put there by the admin
    error, _ = _produce(admin_settings, f"{topic_prefix}{topic}")
    assert error is None
    settings = service_settings(devstack, topic_prefix, user)
    seen = _consume(settings, f"{topic_prefix}{topic}", f"{topic_prefix}{group}")
    assert seen, "neither a record nor a refusal"
    assert isinstance(seen[0], KafkaError), f"{user} read {seen[0]!r}"
    assert seen[0].code() == refusal, seen[0]


def test_topics_are_replicated_three_times_with_two_in_sync(
    devstack: TestInfrastructure, topic_prefix: str, admin_settings: CommonSettings
) -> None:
    from confluent_kafka.admin._config import ConfigResource

    from services.core.kafka import admin_client

    admin = admin_client(admin_settings)
    metadata = admin.list_topics(timeout=10)
    for topic in admin_settings.topics:
        partitions = metadata.topics[topic].partitions.values()
        assert {len(p.replicas) for p in partitions} == {3}, topic
    resource = ConfigResource(ConfigResource.Type.TOPIC, admin_settings.topic_provider_switched)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["min.insync.replicas"].value == "2"
    # the settings `relink kafka topics` reads on a cluster make the same topics
    other = admin_settings.model_copy(update={"topic_prefix": f"{topic_prefix}again."})
    try:
        create_topics(other, partitions=1)
        metadata = admin.list_topics(timeout=10)
        assert {
            len(p.replicas) for p in metadata.topics[other.topic_session_failed].partitions.values()
        } == {3}
    finally:
        from services.core.kafka import delete_topics

        delete_topics(other, other.topics)
