"""Every meeting relink made ends as its session's one meeting or deleted (issue 17).

The rule `relink soak` checks ("one live meeting per session after the grace
period"), through the real parts: the relay, Kafka, `relink migrator`
processes, the gateway's own rollback transaction, and the simulator over
HTTP, whose live meetings per session are what the assertions read.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, text
from sqlalchemy.orm import sessionmaker

from devtools.provider_sim.server import SimHandle
from services.core.settings import CommonSettings
from services.oauth_gateway.adapters.db import GatewayStore
from tests.migrator.conftest import (
    migration_rows,
    session_rows,
    settled,
    switch_row,
    wait_for,
)
from tests.migrator.factory import Factory
from tests.migrator.test_rollback import FAST_CLEANUP, connection, request_rollback

PROVIDERS = ("zoom", "google_meet")
# Long enough to kill the process inside it whatever the load on the machine.
CREATE_LATENCY_S = 6.0


def live(sim: SimHandle, provider: str, email: str) -> list[dict[str, Any]]:
    """The live meetings of one account at the simulator (its admin listing)."""
    name = {"zoom": "zoom", "google_meet": "google"}[provider]
    answer = httpx.get(f"{sim.base_url}/_admin/accounts/{name}/{email}", timeout=10)
    answer.raise_for_status()
    meetings: list[dict[str, Any]] = answer.json()["meetings"]
    return meetings


def live_ids(sim: SimHandle, provider: str, email: str) -> set[str]:
    return {str(m["id"]) for m in live(sim, provider, email)}


def live_per_session(
    engine: Engine, sim: SimHandle, email: str, sessions: list[Any]
) -> Counter[Any]:
    """Live meetings at both providers per session, told by their start time.

    Each of the test's sessions starts at its own hour (the factory spaces them).
    """
    by_start = {
        row.scheduled_start_at.astimezone(UTC).replace(microsecond=0): row.id
        for row in session_rows(engine, sessions)
    }
    count: Counter[Any] = Counter()
    for provider in PROVIDERS:
        for meeting in live(sim, provider, email):
            raw = meeting.get("start_time") or (meeting.get("start") or {}).get("dateTime")
            start = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
            count[by_start.get(start.astimezone(UTC).replace(microsecond=0))] += 1
    return count


def one_meeting_each(engine: Engine, sim: SimHandle, email: str, sessions: list[Any]) -> None:
    """The issue's rule: every session has exactly one live meeting, and no meeting is nobody's."""
    count = live_per_session(engine, sim, email, sessions)
    assert count == Counter({s: 1 for s in sessions}), count


def past_deadline(engine: Engine, *switches: Any) -> None:
    """The grace period of these switches is over."""
    with engine.begin() as db:  # the request's deadline, and the progress row's copy
        for table in ("switch_requests", "provider_switches"):
            db.execute(
                text(f"UPDATE {table} SET rollback_deadline = :d WHERE id = ANY(:ids)"),
                {"d": datetime.now(UTC) - timedelta(seconds=1), "ids": list(switches)},
            )


def creates_in_flight(engine: Engine, switch_id: Any) -> None:
    """Every row of the switch claimed, and its create sent (waiting out the latency)."""
    wait_for(
        lambda: (rows := migration_rows(engine, switch_id)) and all(r.attempts for r in rows),
        what="the Zoom creates are claimed",
        every=0.05,
    )
    time.sleep(1.5)  # the creates reach the simulator and wait out its latency there


async def test_meetings_a_superseded_switch_made_while_its_process_died_are_deleted(
    engine: Engine,
    factory: Factory,
    sim_admin: Any,
    migrator_sim: SimHandle,
    relay: Any,
    start_migrator: Any,
) -> None:
    """Meet → Zoom with its creates in flight, the process killed, then Zoom → Meet.

    The Zoom meetings were made, nobody recorded them, and the newer switch
    skipped their rows: they stayed live next to each session's Meet event.
    The cleanup finds them by relink's marker and deletes them.
    """
    sim = migrator_sim
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=3, provider="google_meet")
    await factory.real_meetings(tutor, sessions, provider="google_meet")
    meet_before = live_ids(sim, "google_meet", tutor.email)
    await sim_admin.faults("zoom", tutor.email, latency_ms=CREATE_LATENCY_S * 1000)
    first = start_migrator(**FAST_CLEANUP)
    to_zoom = factory.switch(tutor, to_provider="zoom")
    creates_in_flight(engine, to_zoom)
    first.kill()
    wait_for(
        lambda: len(live_ids(sim, "zoom", tutor.email)) == 3,
        what="the simulator finishes the creates the dead process sent",
    )
    await sim_admin.faults("zoom", tutor.email, latency_ms=0)

    back_to_meet = factory.switch(tutor, to_provider="google_meet")
    start_migrator(**FAST_CLEANUP)
    wait_for(lambda: settled(engine, back_to_meet), what="the switch back to Meet settles")
    assert switch_row(engine, to_zoom).state == "SUPERSEDED"
    past_deadline(engine, to_zoom, back_to_meet)

    wait_for(
        lambda: live_ids(sim, "zoom", tutor.email) == set(),
        what="the unrecorded Zoom meetings deleted",
    )
    assert live_ids(sim, "google_meet", tutor.email) == meet_before
    assert {r.meeting_external_id for r in session_rows(engine, sessions)} == meet_before
    one_meeting_each(engine, sim, tutor.email, sessions)


async def test_meetings_made_for_rows_superseded_mid_create_are_deleted_despite_errors(
    engine: Engine,
    factory: Factory,
    sim_admin: Any,
    migrator_sim: SimHandle,
    relay: Any,
    start_migrator: Any,
) -> None:
    """Meet → Zoom, and Zoom → Meet handled while the Zoom creates are in flight.

    The creates succeed after their rows were skipped; the executor's one try
    to delete each meeting met a Zoom error, and nothing tried again: the
    meetings stayed live. They are recorded on their rows and the cleanup
    deletes them once Zoom answers.
    """
    sim = migrator_sim
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=3, provider="google_meet")
    await factory.real_meetings(tutor, sessions, provider="google_meet")
    meet_before = live_ids(sim, "google_meet", tutor.email)
    await sim_admin.faults("zoom", tutor.email, latency_ms=CREATE_LATENCY_S * 1000)
    migrator = start_migrator(**FAST_CLEANUP)
    to_zoom = factory.switch(tutor, to_provider="zoom")
    creates_in_flight(engine, to_zoom)
    back_to_meet = factory.switch(tutor, to_provider="google_meet")
    wait_for(
        lambda: all(r.state == "SKIPPED" for r in migration_rows(engine, to_zoom)),
        what="the Zoom switch's rows skipped while their creates are in flight",
        every=0.05,
    )
    wait_for(
        lambda: len(live_ids(sim, "zoom", tutor.email)) == 3,
        what="the Zoom creates answered",
        every=0.05,
    )
    # The executor's deletions now wait out the latency: Zoom fails them.
    await sim_admin.faults("zoom", tutor.email, error_rate=1.0)
    wait_for(
        lambda: migrator.output().count("could not delete an unused meeting") >= 3,
        what="the executor's deletions refused",
    )
    await sim_admin.faults("zoom", tutor.email, error_rate=0.0, latency_ms=0)
    wait_for(lambda: settled(engine, back_to_meet), what="the switch back to Meet settles")
    past_deadline(engine, to_zoom, back_to_meet)

    wait_for(
        lambda: live_ids(sim, "zoom", tutor.email) == set(),
        what="the Zoom meetings deleted once Zoom answers",
    )
    assert live_ids(sim, "google_meet", tutor.email) == meet_before
    one_meeting_each(engine, sim, tutor.email, sessions)


async def test_rollback_of_a_newer_switch_leaves_the_old_meetings_deletable(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    migrator_sim: SimHandle,
    relay: Any,
    start_migrator: Any,
) -> None:
    """Zoom → Meet, Meet → Zoom, roll the second back; then the first's grace period ends.

    The rollback forgot the Zoom tokens it was handed back, so the first
    switch's cleanup had no way to delete the sessions' old Zoom meetings:
    it marked itself done and each session kept two live meetings.
    """
    sim = migrator_sim
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=3, provider="zoom")
    await factory.real_meetings(tutor, sessions, provider="zoom")
    start_migrator(**FAST_CLEANUP)
    to_meet = factory.switch(tutor, to_provider="google_meet")
    assert wait_for(lambda: settled(engine, to_meet), what="to Meet").state == "COMPLETED"
    on_meet = {r.meeting_external_id for r in session_rows(engine, sessions)}
    back_to_zoom = factory.switch(tutor, to_provider="zoom")
    assert wait_for(lambda: settled(engine, back_to_zoom), what="to Zoom").state == "COMPLETED"

    request_rollback(engine, settings, tutor=tutor, switch=back_to_zoom)
    wait_for(lambda: switch_row(engine, back_to_zoom).state == "ROLLED_BACK", what="rolled back")
    assert {r.meeting_external_id for r in session_rows(engine, sessions)} == on_meet

    past_deadline(engine, to_meet)
    wait_for(
        lambda: switch_row(engine, to_meet).old_meetings_cleaned_at is not None,
        what="the first switch's cleanup",
    )
    assert live_ids(sim, "zoom", tutor.email) == set()
    assert live_ids(sim, "google_meet", tutor.email) == on_meet
    one_meeting_each(engine, sim, tutor.email, sessions)
    # Nothing is owed any more: the kept tokens are forgotten.
    wait_for(
        lambda: connection(engine, tutor.id).previous_provider is None,
        what="the kept Zoom tokens forgotten",
    )
    assert connection(engine, tutor.id).previous_access_token_encrypted is None


async def test_old_meetings_the_provider_refused_to_delete_are_deleted_later(
    engine: Engine,
    factory: Factory,
    sim_admin: Any,
    migrator_sim: SimHandle,
    relay: Any,
    start_migrator: Any,
) -> None:
    """Zoom answers 500 to every call while the grace period ends; then it recovers.

    The cleanup tried each deletion once, marked the switch cleaned and forgot
    the Zoom tokens: the old meetings stayed live for good.
    """
    sim = migrator_sim
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=3, provider="zoom")
    await factory.real_meetings(tutor, sessions, provider="zoom")
    migrator = start_migrator(**FAST_CLEANUP)
    switch_id = factory.switch(tutor, to_provider="google_meet")
    assert wait_for(lambda: settled(engine, switch_id), what="switch").state == "COMPLETED"
    new_meetings = live_ids(sim, "google_meet", tutor.email)

    await sim_admin.faults("zoom", tutor.email, error_rate=1.0)
    past_deadline(engine, switch_id)
    wait_for(
        lambda: migrator.output().count("could not delete meeting") >= 3,
        what="the cleanup's deletions refused",
    )
    await sim_admin.faults("zoom", tutor.email, error_rate=0.0)

    wait_for(
        lambda: live_ids(sim, "zoom", tutor.email) == set(),
        what="the old Zoom meetings deleted once Zoom answers again",
    )
    wait_for(
        lambda: switch_row(engine, switch_id).old_meetings_cleaned_at is not None,
        what="the cleanup done",
    )
    assert live_ids(sim, "google_meet", tutor.email) == new_meetings
    one_meeting_each(engine, sim, tutor.email, sessions)
    assert connection(engine, tutor.id).previous_provider is None


def request_retry(engine: Engine, settings: CommonSettings, *, tutor: Any, switch: Any) -> None:
    """The gateway's own retry transaction (the `session.retry_requested` outbox row)."""
    store = GatewayStore(sessionmaker(engine), cipher=settings.token_cipher(), topics=settings)
    store.request_retry(tutor_id=tutor.id, switch_id=switch, now=datetime.now(UTC))


def cleaned(engine: Engine, switch_id: Any) -> bool:
    with engine.connect() as db:
        at = db.execute(
            text("SELECT old_meetings_cleaned_at FROM provider_switches WHERE id = :id"),
            {"id": switch_id},
        ).scalar_one()
    return at is not None


async def test_sessions_retried_after_the_cleanup_still_lose_their_old_meeting(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    migrator_sim: SimHandle,
    relay: Any,
    start_migrator: Any,
) -> None:
    """Zoom → Meet with every create failing; the grace period ends and the cleanup runs
    (nothing to delete: no session moved); then the tutor retries and the sessions move.

    The retried rows' old Zoom meetings were owed a deletion that never came:
    the switch counted as cleaned and its Zoom tokens were forgotten, so every
    session kept two live meetings. Seen by `relink soak` as sessions with a
    Meet event and their booking's Zoom meeting long after the grace period.
    """
    sim = migrator_sim
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=3, provider="zoom")
    await factory.real_meetings(tutor, sessions, provider="zoom")
    zoom_before = live_ids(sim, "zoom", tutor.email)
    await sim_admin.faults("google_meet", tutor.email, error_rate=1.0)
    start_migrator(
        RELINK_MIGRATOR_MAX_ATTEMPTS="1", RELINK_MIGRATOR_AUTO_RETRIES="0", **FAST_CLEANUP
    )
    to_meet = factory.switch(tutor, to_provider="google_meet")
    wait_for(lambda: settled(engine, to_meet), what="the switch settles with its failures")
    assert switch_row(engine, to_meet).state == "COMPLETED_WITH_FAILURES"
    past_deadline(engine, to_meet)
    wait_for(lambda: cleaned(engine, to_meet), what="the first cleanup of the switch")
    assert live_ids(sim, "zoom", tutor.email) == zoom_before  # in use: nothing moved

    await sim_admin.faults("google_meet", tutor.email, error_rate=0.0)
    request_retry(engine, settings, tutor=tutor, switch=to_meet)
    wait_for(
        lambda: all(r.state == "MIGRATED" for r in migration_rows(engine, to_meet)),
        what="the retried sessions move to Meet",
    )
    wait_for(
        lambda: live_ids(sim, "zoom", tutor.email) == set(),
        what="the retried sessions' old Zoom meetings deleted",
    )
    one_meeting_each(engine, sim, tutor.email, sessions)
