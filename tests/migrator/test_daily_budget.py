"""The daily create budget counts every create a claim takes, whatever moves its usage row.

The claim reads and locks each tutor's usage row of the quota day, claims
within what is left and counts what it claimed. Here another transaction
moves that row to the day before (what `roll_the_quota_day_over`, the tests'
stand-in for midnight, does) right after the claim made sure the row exists:
the claim must still lock a row of the day and count its creates on it.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event, text

from services.core.settings import CommonSettings
from services.migrator.adapters.db.claim import ClaimStore, quota_window
from services.migrator.adapters.db.common import make_async_engine
from services.migrator.adapters.db.plan import PlanStore
from tests.migrator.factory import Factory

CAP = 100


class DayMover(threading.Thread):
    """Moves a tutor's usage rows to the day before, in a transaction of its own."""

    def __init__(self, engine: Engine, tutor_id: object) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.tutor_id = tutor_id
        self.pid: int | None = None
        self.started_moving = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.engine.begin() as conn:
                self.pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
                self.started_moving.set()
                conn.execute(
                    text(
                        "UPDATE provider_quota_usage SET quota_day = quota_day - 1 "
                        "WHERE tutor_id = :t"
                    ),
                    {"t": self.tutor_id},
                )
        except BaseException as exc:
            self.error = exc
            raise

    def moved_or_waiting(self) -> None:
        """Return once the move committed or waits for a lock the claim holds."""
        self.started_moving.wait(10)
        deadline = time.monotonic() + 10
        while self.is_alive() and time.monotonic() < deadline:
            with self.engine.connect() as conn:
                waiting = conn.execute(
                    text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": self.pid},
                ).scalar()
            if waiting == "Lock":
                return
            time.sleep(0.02)


async def test_every_claimed_create_is_counted_when_the_quota_day_moves_mid_claim(
    engine: Engine, settings: CommonSettings, factory: Factory
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    factory.sessions(tutor, count=12, provider="google_meet")
    switch_id = factory.switch(tutor, to_provider="zoom")
    db = make_async_engine(settings.database_url, pool_size=2)
    plans = PlanStore(db, topics=settings)
    claims = ClaimStore(db, topics=settings, daily_caps={"zoom": CAP})
    day, _ = quota_window("zoom", datetime.now(UTC))
    with engine.begin() as conn:  # 95 of today's 100 creates already spent
        conn.execute(
            text(
                "INSERT INTO provider_quota_usage (tutor_id, provider, quota_day, used) "
                "VALUES (:t, 'zoom', :day, :used)"
            ),
            {"t": tutor.id, "day": day, "used": CAP - 5},
        )
    mover = DayMover(engine, tutor.id)

    def move_the_day_once(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        """Right after the claim's first write to the usage rows, the day moves."""
        if mover.ident is None and statement.lstrip().startswith(
            "INSERT INTO provider_quota_usage"
        ):
            mover.start()
            mover.moved_or_waiting()

    event.listen(db.sync_engine, "after_cursor_execute", move_the_day_once)
    try:
        switch = await plans.switch(str(switch_id))
        assert switch is not None
        await plans.start_planning(switch.id)
        await plans.plan_batch(switch, cursor=None, limit=100)
        await plans.finish_planning(switch.id)
        claimed = await claims.claim(
            quotas={str(tutor.id): 10}, limit=10, lease=timedelta(minutes=2)
        )
    finally:
        event.remove(db.sync_engine, "after_cursor_execute", move_the_day_once)
        await db.dispose()
        mover.join(timeout=30)
    assert mover.ident is not None and not mover.is_alive() and mover.error is None

    with engine.connect() as conn:
        usage = conn.execute(
            text(
                "SELECT quota_day, used FROM provider_quota_usage WHERE tutor_id = :t "
                "ORDER BY quota_day"
            ),
            {"t": tutor.id},
        ).all()
    # Every create claimed is counted, and no day's count goes over the cap.
    assert sum(u.used for u in usage) == CAP - 5 + len(claimed), usage
    assert all(u.used <= CAP for u in usage), usage
    assert all(r.budget_day is not None for r in claimed)
