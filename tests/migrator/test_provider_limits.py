"""Rate limits, daily quotas, expired and revoked tokens, late bookings, malformed messages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Producer
from sqlalchemy import Engine, text

from services.core.kafka import producer_config
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


async def test_a_429_burst_is_waited_out(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=5, provider="google_meet")
    await sim_admin.faults("zoom", tutor.email, burst_429=3, retry_after_s=1)
    migrator = start_migrator()
    switch_id = factory.switch(tutor, to_provider="zoom")
    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert (switch.state, switch.sessions_migrated) == ("COMPLETED", 5)
    assert all(r.provider == "zoom" for r in session_rows(engine, sessions))
    account = await sim_admin.account("zoom", tutor.email)
    assert account["create_calls"] == 5
    assert len(account["meetings"]) == 5
    assert "retry later: rate_limited" in migrator.output()


async def test_rows_claimed_ahead_wait_out_a_429_too(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    """One create at a time, two more rows claimed ahead: none may call before the wait ends."""
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=6, provider="google_meet")
    await sim_admin.faults("zoom", tutor.email, burst_429=1, retry_after_s=2)
    migrator = start_migrator(
        RELINK_MIGRATOR_CONCURRENCY="1", RELINK_MIGRATOR_TUTOR_CONCURRENCY="5"
    )
    switch_id = factory.switch(tutor, to_provider="zoom")
    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert (switch.state, switch.sessions_migrated) == ("COMPLETED", 6)
    assert all(r.provider == "zoom" for r in session_rows(engine, sessions))
    account = await sim_admin.account("zoom", tutor.email)
    # Every call was sent after the one before it was answered, so any call
    # inside the 2 s wait is a row that did not wait as told.
    assert account["early_calls"] == 0
    assert account["create_calls"] == 6
    assert "retry later: rate_limited" in migrator.output()


async def test_daily_quota_moves_the_soonest_first_then_the_rest_after_reset(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=6, provider="google_meet")
    await sim_admin.faults("zoom", tutor.email, daily_quota=4)
    # One at a time, so "soonest first" is exact (with more in flight, up to
    # tutor_concurrency - 1 later sessions may win the last creates of a day).
    start_migrator(RELINK_MIGRATOR_TUTOR_CONCURRENCY="1")
    switch_id = factory.switch(tutor, to_provider="zoom")

    def waiting_for_reset() -> list[Any]:
        rows = migration_rows(engine, switch_id)
        pending = [m for m in rows if m.state == "PENDING"]
        if len(pending) == 2 and all(
            m.next_attempt_at > datetime.now(UTC) + timedelta(minutes=1) for m in pending
        ):
            return rows
        return []

    rows = wait_for(waiting_for_reset, what="the rest rescheduled for the quota reset")
    # Soonest first: the four nearest sessions moved on day one.
    assert [m.state for m in rows] == ["MIGRATED"] * 4 + ["PENDING"] * 2
    midnight = (datetime.now(UTC) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    assert all(m.next_attempt_at >= midnight - timedelta(seconds=1) for m in rows[4:])
    assert switch_row(engine, switch_id).state == "MIGRATING"

    # The day rolls over at the provider, and (standing in for the wall clock) here.
    await sim_admin.advance(86_400)
    roll_the_quota_day_over(engine, switch_id)
    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert (switch.state, switch.sessions_migrated) == ("COMPLETED", 6)
    assert all(r.provider == "zoom" for r in session_rows(engine, sessions))
    account = await sim_admin.account("zoom", tutor.email)
    assert len(account["meetings"]) == 6


def roll_the_quota_day_over(engine: Engine, switch_id: uuid.UUID) -> None:
    """Stand in for the wall clock passing midnight UTC: the wait is over, the budget new."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE session_migrations SET next_attempt_at = now() WHERE switch_id = :id"),
            {"id": switch_id},
        )
        conn.execute(text("UPDATE provider_quota_usage SET quota_day = quota_day - 1"))
        conn.execute(
            text("UPDATE provider_switches SET waiting_until = now() WHERE id = :id"),
            {"id": switch_id},
        )


def stored_refresh_token(engine: Engine, factory: Factory, tutor: Any) -> str:
    with engine.connect() as conn:
        blob = conn.execute(
            text(
                "SELECT refresh_token_encrypted FROM tutor_video_provider_connections "
                "WHERE tutor_id = :t"
            ),
            {"t": tutor.id},
        ).scalar_one()
    return factory.cipher.decrypt(bytes(blob), tutor_id=tutor.id, field="refresh_token")


async def test_expired_token_is_refreshed_once_and_the_rotated_one_kept(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=4, provider="google_meet")
    switch_id = factory.switch(tutor, to_provider="zoom")
    original = stored_refresh_token(engine, factory, tutor)
    await sim_admin.expire_tokens("zoom", tutor.email)
    start_migrator()
    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert (switch.state, switch.sessions_migrated) == ("COMPLETED", 4)
    assert all(r.provider == "zoom" for r in session_rows(engine, sessions))
    rotated = stored_refresh_token(engine, factory, tutor)
    assert rotated != original
    # The stored token is the live one: Zoom accepts it (and rotates again).
    fresh = await factory.clients["zoom"].refresh(rotated)
    assert fresh.access_token


async def test_revoked_grant_fails_the_rest_as_reconnect_required(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=4, provider="google_meet")
    switch_id = factory.switch(tutor, to_provider="zoom")
    await sim_admin.revoke("zoom", tutor.email)
    start_migrator()
    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert (switch.state, switch.sessions_failed) == ("COMPLETED_WITH_FAILURES", 4)
    assert all(r.provider == "google_meet" for r in session_rows(engine, sessions))
    failed = read_topic(
        settings.kafka_bootstrap_servers, settings.topic_session_failed, until=lambda g: len(g) >= 4
    )
    assert {m.event.data["reason"] for m in failed} == {"reconnect_required"}
    assert all(m.event.data["retryable"] for m in failed)


async def test_a_booking_accepted_after_the_plan_is_swept_in(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="zoom")
    factory.sessions(tutor, count=3)
    start_migrator(RELINK_MIGRATOR_SWEEP_INTERVAL_S="1")
    switch_id = factory.switch(tutor, to_provider="google_meet")
    wait_for(lambda: settled(engine, switch_id), what="switch settles")
    # Accepted against the old connection while the switch committed.
    late = factory.sessions(tutor, count=1, provider="zoom", start_in=timedelta(hours=3))
    wait_for(
        lambda: session_rows(engine, late)[0].provider == "google_meet", what="late session moved"
    )
    switch = wait_for(
        lambda: (row := settled(engine, switch_id)) and row.sessions_migrated == 4 and row,
        what="switch settles again",
    )
    assert (switch.state, switch.sessions_total) == ("COMPLETED", 4)


async def test_a_malformed_message_is_dead_lettered_and_the_next_one_handled(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    relay: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="zoom")
    factory.sessions(tutor, count=2)
    producer = Producer(producer_config(settings))
    producer.produce(settings.topic_provider_switched, key=str(tutor.id).encode(), value=b"{oops")
    assert producer.flush(10) == 0
    start_migrator()
    switch_id = factory.switch(tutor, to_provider="google_meet")
    assert wait_for(lambda: settled(engine, switch_id), what="switch settles").state == "COMPLETED"
    dead = read_topic(
        settings.kafka_bootstrap_servers, settings.topic_dead_letter, until=lambda g: len(g) >= 1
    )
    assert dead[0].value == b"{oops"
    assert dict(dead[0].headers)["dlq_reason"] == b"not_cloudevent"
