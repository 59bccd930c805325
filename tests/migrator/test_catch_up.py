"""A switch whose `provider.switched` never reaches the migrator is handled from the database.

The gateway commits the switch (PENDING) with its outbox row; handling the
event plans it at once. When the event is lost on its way (a consumer that
skipped it on a rebalance, a broker that was down), the switch would stay
PENDING for ever. The migrator's catch-up handles each switch still PENDING
`RELINK_MIGRATOR_UNHANDLED_AFTER_S` after it was made, as its event would
have: the older of two superseded, the newer planned and migrated. The event
that arrives late then changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import sessionmaker

from services.core.settings import CommonSettings
from services.oauth_gateway.adapters.db import GatewayStore
from tests.migrator.conftest import session_rows, settled, switch_row, wait_for
from tests.migrator.factory import Factory
from tests.migrator.test_rollback import live_meetings

SESSIONS = 3


def tracked(engine: Engine, switch_id: object) -> int:
    """How many deliveries of the switch's events the migrator recorded as handled."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM tracking t JOIN outbox o "
                    "ON CAST(o.event_id AS text) = t.event_id "
                    "WHERE o.payload->>'switch_id' = :s AND t.consumer = 'migrator'"
                ),
                {"s": str(switch_id)},
            ).scalar_one()
        )


async def test_switches_whose_event_never_came_are_handled_from_the_database(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=SESSIONS, provider="zoom")
    # Zoom -> Meet -> Zoom... -> Meet: two switches, neither event ever written.
    older = factory.switch(tutor, to_provider="google_meet", publish=False)
    newer = factory.switch(tutor, to_provider="zoom", publish=False)
    newest = factory.switch(tutor, to_provider="google_meet", publish=False)
    migrator = start_migrator(RELINK_MIGRATOR_UNHANDLED_AFTER_S="3")

    last = wait_for(lambda: settled(engine, newest), what="the newest switch settles")
    assert (last.state, last.sessions_migrated) == ("COMPLETED", SESSIONS)
    for switch_id in (older, newer):
        assert switch_row(engine, switch_id).state == "SUPERSEDED"
    rows = session_rows(engine, sessions)
    assert all(r.provider == "google_meet" for r in rows)
    meet = await live_meetings(sim_admin, "google_meet", tutor.email)
    assert meet == {r.meeting_external_id for r in rows}
    output = migrator.output()
    assert f"switch {newest} is still PENDING" in output
    assert "provider.switched was not handled; handling it from the database" in output

    # The events arrive at last: handled as redundant, nothing made twice.
    for switch_id in (older, newer, newest):
        factory.publish(switch_id)
    wait_for(
        lambda: all(tracked(engine, s) == 1 for s in (older, newer, newest)),
        what="the late events handled",
    )
    assert switch_row(engine, newest).state == "COMPLETED"
    assert await live_meetings(sim_admin, "google_meet", tutor.email) == meet
    assert {r.meeting_external_id for r in session_rows(engine, sessions)} == meet


async def test_a_rollback_whose_event_never_came_is_finished_from_the_request(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
) -> None:
    """The gateway records the rollback on its request; the event is lost on its way.

    The migrator's grace-period timer finds the request and rolls the switch
    back (the progress row ROLLING_BACK, then ROLLED_BACK), no meeting made.
    """
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=SESSIONS, provider="zoom")
    await factory.real_meetings(tutor, sessions, provider="zoom")
    old_zoom = await live_meetings(sim_admin, "zoom", tutor.email)
    start_migrator(RELINK_MIGRATOR_CLEANUP_INTERVAL_S="1")
    switch_id = factory.switch(tutor, to_provider="google_meet")
    assert wait_for(lambda: settled(engine, switch_id), what="switch settles").state == "COMPLETED"

    with engine.begin() as conn:  # the relay never publishes the rollback: its row is gone
        GatewayStore(
            sessionmaker(bind=conn), cipher=settings.token_cipher(), topics=settings
        ).request_rollback(tutor_id=tutor.id, switch_id=switch_id, now=datetime.now(UTC))
        conn.execute(text("DELETE FROM outbox WHERE event_type = 'switch.rollback_requested'"))

    switch = wait_for(
        lambda: (row := switch_row(engine, switch_id)).state == "ROLLED_BACK" and row,
        what="switch rolled back",
    )
    assert switch.rolled_back_at is not None
    rows = session_rows(engine, sessions)
    assert all(r.provider == "zoom" for r in rows)
    assert {r.meeting_external_id for r in rows} == old_zoom
    assert await live_meetings(sim_admin, "zoom", tutor.email) == old_zoom
    assert await live_meetings(sim_admin, "google_meet", tutor.email) == set()
