"""A migrator SIGKILLed while its Zoom creates are in flight: the restart finds them, makes none.

Zoom has no idempotency key. The create reaches Zoom, Zoom makes the
meeting, and the process dies before the answer arrives, so nothing is
recorded. The restarted migrator re-claims the rows and must find those
meetings by the marker in their agenda instead of creating second ones.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine

from services.providers import meeting_marker
from tests.migrator.conftest import migration_rows, session_rows, settled, wait_for
from tests.migrator.factory import Factory

SESSIONS = 4
# Long enough to kill the process inside it whatever the load on the machine.
CREATE_LATENCY_S = 6.0
LEASE = {"RELINK_MIGRATOR_CLAIM_LEASE_S": "2", "RELINK_MIGRATOR_TUTOR_CONCURRENCY": "4"}


async def zoom_meetings(sim_admin: Any, email: str) -> tuple[list[dict[str, Any]], int]:
    """The account's live meetings at the simulator and the create calls it completed."""
    account = await sim_admin.account("zoom", email)
    return list(account["meetings"]), int(account["create_calls"])


async def test_killed_with_zoom_creates_in_flight_makes_no_second_meeting(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=SESSIONS, provider="google_meet")
    await sim_admin.faults("zoom", tutor.email, latency_ms=CREATE_LATENCY_S * 1000)
    first = start_migrator(**LEASE)
    switch_id = factory.switch(tutor, to_provider="zoom")

    wait_for(
        lambda: (
            (rows := migration_rows(engine, switch_id))
            and len(rows) == SESSIONS
            and all(r.attempts >= 1 for r in rows)
        ),
        what="every row claimed",
        every=0.05,
    )
    claimed_at = time.monotonic()
    time.sleep(1.5)  # the creates reach the simulator and wait out its latency there
    first.kill()
    # The simulator finishes the creates nobody waits for any more.
    time.sleep(max(0.0, claimed_at + CREATE_LATENCY_S + 1.5 - time.monotonic()))
    made_while_dead, _ = await zoom_meetings(sim_admin, tutor.email)
    assert made_while_dead, "no create reached the simulator before the kill"
    assert all(r.new_meeting_external_id is None for r in migration_rows(engine, switch_id))

    await sim_admin.faults("zoom", tutor.email, latency_ms=0)
    second = start_migrator(**LEASE)
    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")

    assert (switch.state, switch.sessions_migrated) == ("COMPLETED", SESSIONS)
    live, create_calls = await zoom_meetings(sim_admin, tutor.email)
    rows = session_rows(engine, sessions)
    assert all(r.provider == "zoom" for r in rows)
    assert len(live) == SESSIONS, f"{len(live)} Zoom meetings for {SESSIONS} sessions"
    assert {str(m["id"]) for m in live} == {r.meeting_external_id for r in rows}
    for row in rows:
        marker = meeting_marker(str(switch_id), str(row.id))
        assert sum(marker in m["agenda"] for m in live) == 1
    # Only the creates the first process never heard back from were not repeated.
    assert create_calls == SESSIONS
    assert {str(m["id"]) for m in made_while_dead} <= {r.meeting_external_id for r in rows}
    assert "meeting from an earlier attempt found; reusing it" in second.output()
