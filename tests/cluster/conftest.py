"""Fixtures for the tests on the devstack's secured 3-node Kafka cluster.

The cluster takes the single broker's ports (node 1 is RELINK_DEVSTACK_KAFKA_PORT),
so these tests run on their own: `make test-cluster` (`make test` leaves this
folder out). The fixtures of tests/conftest.py that build on `devstack` (the
test's database) work unchanged; the Kafka ones are replaced here by versions
that log in as the admin and grant each service its ACLs on the test's topics.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.devstack.settings import DevstackSettings
from services.core.settings import CommonSettings
from tests.conftest import TestInfrastructure

pytestmark = pytest.mark.cluster

BROKERS = 3


@pytest.fixture(scope="session")
def devstack() -> Iterator[TestInfrastructure]:
    """PostgreSQL and a 3-node SASL/SCRAM Kafka cluster for the whole session."""
    from devtools.devstack.stack import Devstack

    settings = DevstackSettings()
    settings.kafka_brokers = BROKERS
    stack = Devstack(settings)
    report = stack.up()
    try:
        yield TestInfrastructure(
            database_url=stack.database_url,
            kafka_bootstrap=stack.kafka_bootstrap,
            stack=stack,
            started=report.started,
        )
    finally:
        stack.down(parts=tuple(report.started))


@pytest.fixture(scope="session")
def cluster(devstack: TestInfrastructure) -> Any:
    """The KafkaCluster (nodes, users, ACLs)."""
    assert devstack.stack.cluster is not None
    return devstack.stack.cluster


@pytest.fixture
def topic_prefix(devstack: TestInfrastructure) -> Iterator[str]:
    """A prefix of this test's own: its topics (replication 3, min.insync 2) and
    each service's ACLs on them and on the groups the process stack uses."""
    from services.core.kafka import delete_topics

    prefix = f"t{uuid.uuid4().hex[:10]}."
    devstack.stack.create_topics(
        prefix,
        partitions=3,
        notifier_group=f"{prefix}relink-notifier",
        webhooks_group=f"{prefix}relink-webhooks",
    )
    try:
        yield prefix
    finally:
        with contextlib.suppress(Exception):
            admin = devstack.stack.kafka_settings(prefix)
            delete_topics(admin, admin.topics)


@pytest.fixture
def admin_settings(devstack: TestInfrastructure, topic_prefix: str) -> CommonSettings:
    """Settings that log in as the cluster's admin, on this test's topics."""
    settings: CommonSettings = devstack.stack.kafka_settings(topic_prefix)
    return settings


def service_settings(devstack: TestInfrastructure, prefix: str, user: str) -> CommonSettings:
    """Settings that log in as one service's user."""
    settings: CommonSettings = devstack.stack.kafka_settings(prefix, user)
    return settings


@pytest.fixture
def relink_env(
    devstack: TestInfrastructure, database_url: str, topic_prefix: str
) -> dict[str, str]:
    return {
        **os.environ,
        **devstack.stack.env(),
        "DATABASE_URL": database_url,
        "RELINK_TOPIC_PREFIX": topic_prefix,
        "RELINK_DEV_MODE": "true",
    }
