"""A tutor with more sessions than Zoom's daily cap, and failures retried without being asked."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine, text

from tests.migrator.conftest import migration_rows, session_rows, settled, switch_row, wait_for
from tests.migrator.factory import Factory
from tests.migrator.test_provider_limits import roll_the_quota_day_over
from tests.migrator.test_rollback import outbox_events


def next_midnight_utc() -> datetime:
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    return tomorrow.replace(hour=0, minute=0, second=0, microsecond=0)


def day_done(engine: Engine, switch_id: uuid.UUID, *, migrated: int) -> list[Any]:
    """The rows once `migrated` moved and every other one waits for the reset (else [])."""
    rows = migration_rows(engine, switch_id)
    done = [m for m in rows if m.state == "MIGRATED"]
    waiting = [m for m in rows if m.state == "PENDING"]
    midnight = next_midnight_utc() - timedelta(seconds=5)
    if len(done) != migrated or any(m.next_attempt_at < midnight for m in waiting):
        return []
    return rows if switch_row(engine, switch_id).waiting_until is not None else []


async def test_250_sessions_move_100_a_day_soonest_first_never_over_zooms_cap(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(
        tutor,
        count=250,
        provider="google_meet",
        start_in=timedelta(days=7),
        every=timedelta(minutes=30),
    )
    start_migrator()  # Zoom's documented cap: 100 creates per user per day (the default)
    switch_id = factory.switch(tutor, to_provider="zoom")

    for day, moved in enumerate((100, 200), start=1):
        rows = wait_for(
            partial(day_done, engine, switch_id, migrated=moved),
            timeout_s=180,
            what=f"day {day}: {moved} moved, the rest waiting for the reset",
        )
        # Soonest first: the nearest `moved` sessions are the ones done (rows are in start order).
        assert [m.state for m in rows] == ["MIGRATED"] * moved + ["PENDING"] * (250 - moved)
        switch = switch_row(engine, switch_id)
        assert switch.state == "MIGRATING"
        assert switch.waiting_reason == "daily_quota"
        assert switch.waiting_until == next_midnight_utc()
        # Never a request over the cap: every create Zoom saw made a meeting.
        account = await sim_admin.account("zoom", tutor.email)
        assert account["create_calls"] == moved
        assert len(account["meetings"]) == moved
        # The tutor is told when the rest will move (the notifier emails it).

        def announced(day: int = day) -> list[dict[str, Any]]:
            return outbox_events(engine, "switch.delayed", switch_id)[day - 1 :]

        delays = wait_for(
            announced,
            what="the wait announced",
        )
        assert delays[0]["sessions_waiting"] == 250 - moved
        assert delays[0]["sessions_total"] == 250
        assert delays[0]["sessions_migrated"] <= moved  # a few may still have been in flight
        assert delays[0]["resumes_at"] == next_midnight_utc().isoformat().replace("+00:00", "Z")

        await sim_admin.advance(86_400)
        roll_the_quota_day_over(engine, switch_id)

    switch = wait_for(lambda: settled(engine, switch_id), timeout_s=180, what="switch settles")
    assert (switch.state, switch.sessions_migrated) == ("COMPLETED", 250)
    assert switch.waiting_until is None
    assert all(r.provider == "zoom" for r in session_rows(engine, sessions))
    account = await sim_admin.account("zoom", tutor.email)
    assert account["create_calls"] == 250
    assert len(account["meetings"]) == 250
    assert len(outbox_events(engine, "switch.delayed", switch_id)) == 2


async def test_retryable_failures_are_retried_without_being_asked(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=4, provider="google_meet")
    await sim_admin.faults("zoom", tutor.email, error_rate=1.0)
    start_migrator(
        RELINK_MIGRATOR_MAX_ATTEMPTS="1",
        RELINK_PROVIDER_MAX_ATTEMPTS="1",
        RELINK_MIGRATOR_AUTO_RETRY_AFTER_S="4",
        RELINK_MIGRATOR_SWEEP_INTERVAL_S="1",
    )
    switch_id = factory.switch(tutor, to_provider="zoom")
    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles, all failed")
    assert (switch.state, switch.sessions_failed) == ("COMPLETED_WITH_FAILURES", 4)
    assert all(m.retryable for m in migration_rows(engine, switch_id))

    # Nobody presses "retry failed": the provider recovers, the migrator tries again.
    await sim_admin.faults("zoom", tutor.email, error_rate=0.0)
    wait_for(
        lambda: switch_row(engine, switch_id).state == "COMPLETED",
        what="automatic retry completes the switch",
    )
    rows = migration_rows(engine, switch_id)
    assert all(m.state == "MIGRATED" and m.kind == "retry" for m in rows)
    assert all(m.auto_retries == 1 for m in rows)
    assert all(r.provider == "zoom" for r in session_rows(engine, sessions))
    assert len(outbox_events(engine, "session.migrated", switch_id)) == 4


async def test_reconnect_required_failures_wait_for_the_tutor(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    factory.sessions(tutor, count=3, provider="google_meet")
    switch_id = factory.switch(tutor, to_provider="zoom")
    await sim_admin.revoke("zoom", tutor.email)
    start_migrator(
        RELINK_MIGRATOR_AUTO_RETRY_AFTER_S="1",
        RELINK_MIGRATOR_SWEEP_INTERVAL_S="1",
    )
    wait_for(lambda: settled(engine, switch_id), what="switch settles, reconnect required")
    # Several auto-retry rounds pass; only reconnecting can help, so nothing is retried.
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(4)"))
    rows = migration_rows(engine, switch_id)
    assert all(m.state == "FAILED" and m.auto_retries == 0 for m in rows)
    assert all(m.last_error.startswith("reconnect_required") for m in rows)
