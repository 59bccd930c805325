"""The kept tokens of the provider a tutor left stay until the old meetings there are gone.

Since the switch is split in two (issue 17), the gateway writes the tutor's
request with the connection change, and the migrator makes the switch's
progress row only when it first reads the switch. The release sweep used to
look for that progress row alone: run in between, it found no switch at the
connection's generation and nothing owed at the kept provider yet (the sessions
were still on their meetings there), and forgot the tokens. The switch then
moved the sessions, and its cleanup could not delete their old meetings ("no
connection kept to delete them"): two live meetings per session for ever, as
`relink soak` found.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from devtools.provider_sim.server import SimHandle
from services.core.settings import CommonSettings
from services.migrator.adapters.db.common import make_async_engine
from services.migrator.adapters.db.plan import PlanStore
from services.migrator.adapters.db.rollback import RollbackStore
from tests.migrator.conftest import settled, switch_row, wait_for
from tests.migrator.factory import Factory
from tests.migrator.test_cleanup import live_ids
from tests.migrator.test_rollback import FAST_CLEANUP, connection


async def release_now(settings: CommonSettings) -> int:
    """One round of the migrator's release sweep, as its timer runs it."""
    engine = make_async_engine(settings.database_url, pool_size=1)
    try:
        store = RollbackStore(engine, topics=settings, plans=PlanStore(engine, topics=settings))
        return await store.release_tokens()
    finally:
        await engine.dispose()


async def test_tokens_are_kept_until_the_migrator_has_read_the_switch_and_cleaned_up(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    migrator_sim: SimHandle,
    relay: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=2, provider="google_meet")
    await factory.real_meetings(tutor, sessions, provider="google_meet")
    booked = live_ids(migrator_sim, "google_meet", tutor.email)
    assert len(booked) == 2
    switch_id = factory.switch(
        tutor,
        to_provider="zoom",
        rollback_deadline=datetime.now(UTC) + timedelta(seconds=3),
        publish=False,
    )
    # The sweep runs before the migrator has read the switch (no progress row yet).
    assert not switch_row(engine, switch_id).handled
    assert await release_now(settings) == 0
    assert connection(engine, tutor.id).previous_provider == "google_meet"

    factory.publish(switch_id)
    start_migrator(**FAST_CLEANUP)
    switch = wait_for(lambda: settled(engine, switch_id), what="the switch settles")
    assert (switch.state, switch.sessions_migrated) == ("COMPLETED", 2)
    wait_for(
        lambda: switch_row(engine, switch_id).old_meetings_cleaned_at is not None,
        what="the grace period's cleanup",
    )
    # The booking's Meet events were deleted with the kept tokens; then those went.
    assert live_ids(migrator_sim, "google_meet", tutor.email) == set()
    wait_for(
        lambda: connection(engine, tutor.id).previous_provider is None,
        what="the kept tokens forgotten once nothing is owed",
    )
