"""The brief's example and eligibility: relay, Kafka, `relink migrator`, the simulator."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from services.core.settings import CommonSettings
from tests.migrator.conftest import (
    migration_rows,
    read_topic,
    session_rows,
    settled,
    wait_for,
)
from tests.migrator.factory import Factory


async def test_five_zoom_sessions_move_to_google_meet(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=5, provider="zoom")
    # Untouched: past, completed, cancelled, in progress, and another tutor's.
    past = factory.sessions(tutor, count=1, start_in=timedelta(hours=-2))
    done = factory.sessions(tutor, count=1, status="COMPLETED")
    cancelled = factory.sessions(tutor, count=1, status="CANCELLED")
    running = factory.sessions(tutor, count=1, status="IN_PROGRESS")
    other = await factory.tutor(provider="zoom")
    others = factory.sessions(other, count=2)
    untouched = past + done + cancelled + running + others
    before = {row.id: row for row in session_rows(engine, untouched)}

    start_migrator()
    switch_id = factory.switch(tutor, to_provider="google_meet")

    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert switch.state == "COMPLETED"
    assert (switch.sessions_total, switch.sessions_migrated, switch.sessions_failed) == (5, 5, 0)

    rows = session_rows(engine, sessions)
    assert all(r.provider == "google_meet" for r in rows)
    assert all("/google/meet/" in r.join_url for r in rows)
    account = await sim_admin.account("google_meet", tutor.email)
    live = {m["id"] for m in account["meetings"]}
    assert {r.meeting_external_id for r in rows} == live and len(live) == 5

    for row in session_rows(engine, untouched):
        assert row == before[row.id]
    assert {m.state for m in migration_rows(engine, switch_id)} == {"MIGRATED"}

    migrated = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_session_migrated,
        until=lambda got: len(got) >= 5,
    )
    payloads = [m.event.data for m in migrated]
    assert sorted(p["session_id"] for p in payloads) == sorted(str(s) for s in sessions)
    assert all(p["switch_id"] == str(switch_id) and p["kind"] == "switch" for p in payloads)
    assert all(m.key == str(tutor.id) for m in migrated)
