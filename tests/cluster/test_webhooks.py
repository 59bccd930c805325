"""The webhooks dispatcher runs on the secured cluster as its own Kafka user.

`relink run` with RELINK_DEVSTACK_KAFKA_BROKERS=3 starts it with the `webhooks`
user (SCRAM), whose ACLs let it read the event topics in its group and nothing
else (tests/cluster/test_security.py). Here a real `relink webhooks` process
logged in as that user delivers a switch's events, produced by the relay's user,
to a receiver that verifies every signature with the `standardwebhooks` library.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine

from services.core.db.models import WebhookDeliveryState
from tests.cluster.conftest import service_settings
from tests.notifier.conftest import make_world, migrated_event, produce, settled_event
from tests.webhooks.conftest import (
    Receiver,
    receiver,
    register,
    rows,
    start_dispatcher,
    stop,
    wait_for,
    webhooks_env,
)

pytestmark = pytest.mark.cluster

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class
    from tests.conftest import TestInfrastructure

__all__ = ["receiver"]  # the fixture, used by name


def test_the_dispatcher_delivers_as_its_own_user_on_the_cluster(
    devstack: TestInfrastructure,
    topic_prefix: str,
    relink_env: dict[str, str],
    engine: Engine,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    cluster = devstack.stack.cluster
    assert cluster is not None
    env = webhooks_env(
        {**relink_env, **cluster.security.env("webhooks")},
        RELINK_WEBHOOKS_GROUP_ID=f"{topic_prefix}relink-webhooks",
    )
    endpoint = register(env, receiver, "--name", "platform")
    world = make_world(engine, sessions_per_student=[1, 1])
    batch = [*(migrated_event(world, s) for s in world.sessions), settled_event(world)]
    produce(service_settings(devstack, topic_prefix, "relay"), batch)

    dispatcher = start_dispatcher(env, tmp_path / "webhooks.log")
    try:
        wait_for(
            lambda: {f"msg_{e.id}" for e in batch} <= set(receiver.verified()),
            timeout=120,
            what="every event delivered by the dispatcher on the cluster",
        )
    finally:
        stop(dispatcher)
    assert all(r.payload is not None for r in receiver.all())
    delivered = rows(
        engine,
        "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = :e AND state = :s",
        e=endpoint,
        s=WebhookDeliveryState.DELIVERED,
    )[0][0]
    assert delivered == len(batch)
    log = (tmp_path / "webhooks.log").read_text()
    assert "AUTHORIZATION_FAILED" not in log
    assert cluster.security.password("webhooks") not in log
