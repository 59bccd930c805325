"""`NotifierEvents.caught_up` asks the real broker about the whole group, not one member.

`relink notifier --until-idle` ends only once it is true (see
tests/unit/notifier/test_until_idle.py for the loop): records on partitions
this process was never assigned still count until some member commits them.
"""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Producer
from sqlalchemy import Engine

from services.core.kafka import consumer_config, producer_config
from services.notifier.adapters.kafka import NotifierEvents
from services.notifier.settings import NotifierSettings
from tests.notifier.conftest import make_world, migrated_event, produce, settled_event, wait_for


def events_of(settings: NotifierSettings) -> NotifierEvents:
    return NotifierEvents(
        consumer=Consumer(consumer_config(settings, group_id=settings.group_id)),
        dead_letters=Producer(producer_config(settings)),
        settings=settings,
    )


def test_the_group_is_caught_up_only_once_some_member_committed_every_record(
    engine: Engine, notifier_settings: NotifierSettings
) -> None:
    settings = notifier_settings.model_copy(update={"group_id": f"idle-{uuid.uuid4().hex}"})
    watcher = events_of(settings)  # in the group, never assigned a partition
    member = events_of(settings)
    try:
        # (eventually: the test's topics were just made, their leaders may not be known yet,
        # and caught_up answers False until the metadata is complete)
        wait_for(watcher.caught_up, timeout=30, what="an empty group on empty topics caught up")
        world = make_world(engine, sessions_per_student=[2, 1])
        batch = [*(migrated_event(world, s) for s in world.sessions), settled_event(world)]
        produce(settings, batch)
        assert not watcher.caught_up(), "records nobody in the group committed"

        member.subscribe(on_assign=lambda *_: None)
        read: list[object] = []

        def read_all() -> bool:
            messages = member.consume(batch_size=100, timeout_s=0.5)
            read.extend(messages)
            if messages:
                member.commit(messages)
            return len(read) >= len(batch) and watcher.caught_up()

        wait_for(read_all, timeout=60, what="another member read and committed every record")
        assert watcher.caught_up()
    finally:
        member.consumer.close()
        watcher.consumer.close()
