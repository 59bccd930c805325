"""Bookings Zoom would refuse as they stand still get their meeting: relink keeps within the limits.

A booking's topic may be longer than Zoom's 200 characters (bookings store
any text) and its time zone a name Zoom does not know. The strict simulator
refuses both (code 300); the migrator must still move every session, with
the topic cut, the time zone sent as UTC and the start instant unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

from services.providers import meeting_marker
from tests.migrator.conftest import session_rows, settled, wait_for
from tests.migrator.factory import Factory

LONG_TOPIC = "Exam preparation: " + "quadratic equations and their graphs, " * 12


async def test_over_long_topic_and_unknown_time_zone_still_migrate(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=3, provider="google_meet")
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE bookings SET topic = :topic, timezone = 'Europe/Atlantis' "
                "WHERE id IN (SELECT booking_id FROM sessions WHERE id = ANY(:ids))"
            ),
            {"topic": LONG_TOPIC, "ids": sessions},
        )
    assert len(LONG_TOPIC) > 200
    start_migrator()
    switch_id = factory.switch(tutor, to_provider="zoom")

    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert (switch.state, switch.sessions_migrated, switch.sessions_failed) == ("COMPLETED", 3, 0)
    rows = {str(r.id): r for r in session_rows(engine, sessions)}
    meetings = (await sim_admin.account("zoom", tutor.email))["meetings"]
    assert {str(m["id"]) for m in meetings} == {r.meeting_external_id for r in rows.values()}
    for meeting in meetings:
        assert len(meeting["topic"]) == 200
        assert LONG_TOPIC.startswith(meeting["topic"][:-1].rstrip())
        assert meeting["timezone"] == "UTC"
        (session_id,) = [
            sid for sid in rows if meeting_marker(str(switch_id), sid) in meeting["agenda"]
        ]
        start = datetime.fromisoformat(meeting["start_time"].replace("Z", "+00:00"))
        assert start == rows[session_id].scheduled_start_at.replace(microsecond=0)
