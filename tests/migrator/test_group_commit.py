"""Group commit: rows finishing together settle in one transaction, each with its own outcome.

The store's batched writes run against the test's real PostgreSQL; the
batcher's own rules (batches form while a flush runs, one session per batch,
one row's error stays that row's, a deadlock runs again) are checked with
plain coroutines standing in for the flush.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from services.core.db.errors import RetryableConflict
from services.core.settings import CommonSettings
from services.migrator.adapters.db.claim import ClaimStore
from services.migrator.adapters.db.common import make_async_engine
from services.migrator.adapters.db.group_commit import GroupCommit
from services.migrator.adapters.db.outcome import OutcomeStore
from services.migrator.adapters.db.plan import PlanStore
from services.providers import Meeting
from tests.migrator.conftest import migration_rows, switch_row
from tests.migrator.factory import Factory


async def test_one_batch_moves_the_eligible_sessions_and_skips_the_cancelled_one(
    engine: Engine, settings: CommonSettings, factory: Factory
) -> None:
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=4, provider="zoom")
    switch_id = factory.switch(tutor, to_provider="google_meet")
    db = make_async_engine(settings.database_url, pool_size=2)
    plans = PlanStore(db, topics=settings)
    claims = ClaimStore(db, topics=settings)
    outcomes = OutcomeStore(db, topics=settings)
    try:
        switch = await plans.switch(str(switch_id))
        assert switch is not None
        await plans.start_planning(switch.id)
        await plans.plan_batch(switch, cursor=None, limit=100)
        await plans.finish_planning(switch.id)
        claimed = await claims.claim(
            quotas={str(tutor.id): 10}, limit=10, lease=timedelta(minutes=2)
        )
        assert sorted(r.session_id for r in claimed) == sorted(str(s) for s in sessions)
        # A student cancels one lesson while its meeting is being made.
        cancelled = claimed[2]
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE sessions SET status = 'CANCELLED' WHERE id = :id"),
                {"id": cancelled.session_id},
            )
        done = [
            (row, Meeting(provider="google_meet", external_id=f"m-{n}", join_url=f"https://m/{n}"))
            for n, row in enumerate(claimed)
        ]

        assert await outcomes.record_meetings(done) == [True] * 4
        # Recorded once: a second answer for the same rows finds them taken.
        assert await outcomes.record_meetings(done) == [False] * 4
        moved = await outcomes.complete_migrations(done)
    finally:
        await db.dispose()

    assert moved == [row is not cancelled for row in claimed]
    states = {str(m.session_id): m.state for m in migration_rows(engine, switch_id)}
    assert states[cancelled.session_id] == "SKIPPED"
    assert sorted(states.values()) == ["MIGRATED", "MIGRATED", "MIGRATED", "SKIPPED"]
    row = switch_row(engine, switch_id)
    assert (row.state, row.sessions_total, row.sessions_migrated) == ("COMPLETED", 3, 3)
    with engine.connect() as conn:
        published = conn.execute(
            text(
                "SELECT payload->>'session_id' AS session_id, payload->>'join_url' AS url "
                "FROM outbox WHERE event_type = 'session.migrated' ORDER BY id"
            )
        ).all()
        on_meet = conn.execute(
            text("SELECT id, join_url FROM sessions WHERE provider = 'google_meet'")
        ).all()
    expected = [(r.session_id, m.join_url) for r, m in done if r is not cancelled]
    assert [(p.session_id, p.url) for p in published] == expected
    assert sorted((str(s.id), s.join_url) for s in on_meet) == sorted(expected)


def _counting(
    flushed: list[list[int]], *, delay_s: float = 0.02, bad: int | None = None
) -> GroupCommit[int, int]:
    async def flush(items: Sequence[int]) -> list[int]:
        flushed.append(list(items))
        await asyncio.sleep(delay_s)
        if bad is not None and bad in items:
            raise ValueError(f"row {bad} is bad")
        return [i * 10 for i in items]

    return GroupCommit(flush, name="test", key=lambda i: i % 100)


async def test_submissions_gather_while_a_flush_runs() -> None:
    flushed: list[list[int]] = []
    batcher = _counting(flushed)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.005)  # its flush is running
    results = await asyncio.gather(first, *(batcher.submit(i) for i in range(1, 10)))
    assert results == [i * 10 for i in range(10)]
    # The first submission flushed alone; the other nine waited for it and went together.
    assert flushed == [[0], list(range(1, 10))]
    assert (batcher.batches, batcher.items) == (2, 10)


async def test_a_lone_submission_is_flushed_at_once_and_alone() -> None:
    flushed: list[list[int]] = []
    batcher = _counting(flushed, delay_s=0)
    assert await batcher.submit(7) == 70
    assert await batcher.submit(8) == 80
    assert flushed == [[7], [8]]


async def test_two_items_with_one_key_never_share_a_batch() -> None:
    flushed: list[list[int]] = []
    batcher = _counting(flushed)
    await asyncio.gather(*(batcher.submit(i) for i in (1, 2, 101, 3, 102)))
    # Keys are i % 100: 101 waits for 1's batch to end, 102 for 2's.
    assert flushed == [[1, 2, 3], [101, 102]]


async def test_one_bad_row_fails_alone() -> None:
    flushed: list[list[int]] = []
    batcher = _counting(flushed, bad=5)
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(8)), return_exceptions=True)
    assert [o for o in outcomes if isinstance(o, Exception)] == [outcomes[5]]
    assert isinstance(outcomes[5], ValueError)
    assert [o for n, o in enumerate(outcomes) if n != 5] == [n * 10 for n in range(8) if n != 5]
    # The failed batch ran again item by item: [5] alone is in the flushes.
    assert [5] in flushed


async def test_a_deadlocked_batch_runs_again_whole() -> None:
    calls: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            # what the engine raises for PostgreSQL's "deadlock detected"
            raise RetryableConflict("DeadlockDetected: deadlock detected")
        return list(items)

    batcher: GroupCommit[int, int] = GroupCommit(flush, name="test")
    assert await batcher.submit(1) == 1
    assert calls == [[1], [1]]


async def test_max_batch_must_be_positive() -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        return list(items)

    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(flush, name="test", max_batch=0)
