"""Which sessions a switch moves: the rule production runs, the planning query.

The migrator's plan (`PlanStore.plan_batch`) decides eligibility in SQL
against the test's real PostgreSQL: only sessions still scheduled (or open
to join), not yet started, and not already on the new provider get a
migration row.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from services.core.settings import CommonSettings
from services.migrator.adapters.db.common import make_async_engine
from services.migrator.adapters.db.plan import PlanStore
from tests.migrator.factory import Factory

HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("status", "start_in", "provider", "moved"),
    [
        ("SCHEDULED", HOUR, "zoom", True),
        ("JOIN_OPEN", HOUR, "zoom", True),
        ("SCHEDULED", -HOUR, "zoom", False),  # past
        ("IN_PROGRESS", HOUR, "zoom", False),
        ("COMPLETED", HOUR, "zoom", False),
        ("CANCELLED", HOUR, "zoom", False),
        ("SCHEDULED", HOUR, "google_meet", False),  # already on the new provider
    ],
)
async def test_only_future_scheduled_sessions_on_another_provider_are_planned(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    status: str,
    start_in: timedelta,
    provider: str,
    moved: bool,
) -> None:
    tutor = await factory.tutor(provider="zoom")
    (session,) = factory.sessions(
        tutor, count=1, provider=provider, start_in=start_in, status=status
    )
    # a plainly eligible session beside it: the plan ran, whatever it made of the other
    (control,) = factory.sessions(tutor, count=1, provider="zoom", start_in=2 * HOUR)
    switch_id = factory.switch(tutor, to_provider="google_meet")
    db = make_async_engine(settings.database_url, pool_size=2)
    plans = PlanStore(db, topics=settings)
    try:
        switch = await plans.switch(str(switch_id))
        assert switch is not None
        await plans.start_planning(switch.id)
        await plans.plan_batch(switch, cursor=None, limit=100)
    finally:
        await db.dispose()

    with engine.connect() as conn:
        planned: set[uuid.UUID] = {
            row.session_id
            for row in conn.execute(
                text("SELECT session_id FROM session_migrations WHERE switch_id = :s"),
                {"s": switch_id},
            )
        }
    assert control in planned
    assert (session in planned) is moved
