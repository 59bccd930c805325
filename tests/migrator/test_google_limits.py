"""Google's refusals through the whole migrator: failed conferences, missing links, limits."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import Engine

from services.core.settings import CommonSettings
from tests.migrator.conftest import (
    migration_rows,
    read_topic,
    session_rows,
    settled,
    switch_row,
    wait_for,
)
from tests.migrator.factory import Factory
from tests.migrator.test_resilience import request_retry
from tests.migrator.test_rollback import outbox_events


async def test_a_failed_meet_conference_is_recreated_and_the_session_moves(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=1)
    await sim_admin.faults("google_meet", tutor.email, conference_failures=1)
    migrator = start_migrator()
    switch_id = factory.switch(tutor, to_provider="google_meet")

    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")

    assert (switch.state, switch.sessions_migrated) == ("COMPLETED", 1)
    [session] = session_rows(engine, sessions)
    assert session.provider == "google_meet" and session.join_url
    async with httpx.AsyncClient(timeout=10) as browser:
        assert (await browser.get(session.join_url)).status_code == 200
    account = await sim_admin.account("google_meet", tutor.email)
    # One live event (the failed conference was replaced on it), two conferences asked for.
    assert [m["id"] for m in account["meetings"]] == [session.meeting_external_id]
    assert account["conferences"] == 2
    # The first attempt saw the failure and was retried.
    assert "retry later: provider_error" in migrator.output()


async def test_a_meeting_without_a_join_link_fails_its_session_clearly(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=2)
    await sim_admin.faults("google_meet", tutor.email, conference_missing=1)
    start_migrator(RELINK_MIGRATOR_TUTOR_CONCURRENCY="1")
    switch_id = factory.switch(tutor, to_provider="google_meet")

    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")

    assert (switch.state, switch.sessions_migrated, switch.sessions_failed) == (
        "COMPLETED_WITH_FAILURES",
        1,
        1,
    )
    rows = migration_rows(engine, switch_id)
    [failed] = [m for m in rows if m.state == "FAILED"]
    assert failed.last_error.startswith("no_join_link")
    assert failed.retryable is False
    # The session without a link keeps its old (Zoom) meeting.
    by_id = {str(s.id): s for s in session_rows(engine, sessions)}
    assert by_id[str(failed.session_id)].provider == "zoom"
    events = read_topic(
        settings.kafka_bootstrap_servers, settings.topic_session_failed, until=lambda g: len(g) >= 1
    )
    [event] = [e.event.data for e in events if e.event.data["switch_id"] == str(switch_id)]
    assert event["reason"] == "no_join_link" and event["retryable"] is False
    assert "without a Meet link" in event["detail"]
    # The linkless event was taken back out of the calendar: only the moved session's is live.
    account = await sim_admin.account("google_meet", tutor.email)
    assert len(account["meetings"]) == 1

    # Meet works again and the tutor retries: the session moves, to a new event
    # (Google keeps the deleted event's id taken).
    request_retry(engine, settings, tutor, switch_id)
    wait_for(lambda: switch_row(engine, switch_id).state == "COMPLETED", what="retry completes")
    moved = session_rows(engine, sessions)
    assert all(s.provider == "google_meet" and s.join_url for s in moved)
    account = await sim_admin.account("google_meet", tutor.email)
    assert {m["id"] for m in account["meetings"]} == {s.meeting_external_id for s in moved}


async def test_calendar_usage_limits_are_backed_off_without_promising_a_time(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=3)
    await sim_admin.faults("google_meet", tutor.email, google_usage_limits=2)
    migrator = start_migrator(
        RELINK_MIGRATOR_TUTOR_CONCURRENCY="1",
        RELINK_MIGRATOR_USAGE_LIMIT_BACKOFF_BASE_S="0.2",
        RELINK_MIGRATOR_USAGE_LIMIT_BACKOFF_CAP_S="1",
    )
    switch_id = factory.switch(tutor, to_provider="google_meet")

    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")

    assert (switch.state, switch.sessions_migrated, switch.sessions_failed) == ("COMPLETED", 3, 0)
    assert all(s.provider == "google_meet" for s in session_rows(engine, sessions))
    assert migrator.output().count("retry later: usage_limited") == 2
    # Told once, with no resume time: Google named none.
    [delayed] = outbox_events(engine, "switch.delayed", switch_id)
    assert delayed["reason"] == "usage_limits" and delayed["provider"] == "google_meet"
    assert "resumes_at" not in delayed
    assert delayed["sessions_waiting"] == 3
    account = await sim_admin.account("google_meet", tutor.email)
    assert account["create_calls"] == 5 and len(account["meetings"]) == 3


async def test_google_403_rate_limits_are_waited_out(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=2)
    # More refusals than the client retries in place (2 attempts in these tests).
    await sim_admin.faults("google_meet", tutor.email, google_user_rate_limit_403=3)
    migrator = start_migrator(RELINK_MIGRATOR_TUTOR_CONCURRENCY="1")
    switch_id = factory.switch(tutor, to_provider="google_meet")

    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")

    assert (switch.state, switch.sessions_migrated) == ("COMPLETED", 2)
    assert all(s.provider == "google_meet" for s in session_rows(engine, sessions))
    assert "retry later: rate_limited" in migrator.output()
    # A per-minute throttle is no quota: nothing announced, no wait recorded.
    assert outbox_events(engine, "switch.delayed", switch_id) == []
    assert switch_row(engine, switch_id).waiting_until is None
