"""A real switch, end to end, seen from the platform's webhook receiver: every event the
switch put on the topics arrives, signed, verified with the `standardwebhooks` library.

Every relink process runs as `make run` starts them (the dispatcher among them); the tutor
connects Zoom, books, connects Google Meet through the gateway and the provider simulator.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from devtools.soak.run import SoakDriver, SoakTally
from devtools.soak.stack import PROCESS_NAMES, ProcessStack
from services.core import events
from services.core.db.models import SwitchState
from services.core.settings import CommonSettings
from services.notifier.adapters.kafka import AuditTopicReader, parse_for_audit
from tests.webhooks.conftest import Receiver, register, rows, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STUDENTS = 3


def events_on_topics(settings: CommonSettings) -> list[events.Event]:
    found: list[events.Event] = []
    for batch in AuditTopicReader(settings).read_batches(since=None):
        found.extend(parse_for_audit(m) for m in batch)
    return found


def test_every_event_of_a_real_switch_reaches_the_platform_signed(
    engine: Engine,
    settings: CommonSettings,
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    stack = ProcessStack(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        workdir=tmp_path / "stack",
        names=(*PROCESS_NAMES, "webhooks"),
        extra_env={
            "RELINK_MIGRATOR_POLL_INTERVAL_S": "0.2",
            "RELINK_WEBHOOKS_GROUP_ID": f"{topic_prefix}relink-webhooks",
            "RELINK_WEBHOOKS_RETRY_SCHEDULE_S": "0.2,0.5,1,1,1",
        },
    )
    try:
        stack.start()
        register(stack.env, receiver, "--name", "platform")
        driver = SoakDriver(stack, engine, SoakTally(), random.Random(19))
        tutor = driver.make_tutor(19, students=STUDENTS)
        driver.connect(tutor, "zoom")
        for n in range(STUDENTS):
            driver.book(tutor, days_ahead=2 + n)
        switch_id = driver.connect(tutor, "google_meet")
        assert switch_id is not None

        def settled() -> Any:
            found = rows(engine, "SELECT state FROM provider_switches WHERE id = :id", id=switch_id)
            return found and found[0].state == SwitchState.COMPLETED

        wait_for(settled, timeout=180, what="the switch to complete")

        def everything_arrived() -> list[events.Event] | None:
            on_topics = events_on_topics(settings)
            got = receiver.verified()
            types = {e.type for e in on_topics}
            done = "switch.settled" in types and all(f"msg_{e.id}" in got for e in on_topics)
            return on_topics if done else None

        on_topics = wait_for(everything_arrived, timeout=120, what="every event at the receiver")
    finally:
        stack.stop()
    got = receiver.verified()
    for event in on_topics:
        payload = got[f"msg_{event.id}"]
        assert (payload["type"], payload["data"]) == (event.type, event.data)
    migrated = [e for e in on_topics if e.type == "session.migrated"]
    assert len(migrated) == STUDENTS
    assert {e.data["switch_id"] for e in migrated} == {switch_id}
    assert all(r.payload is not None for r in receiver.all())
