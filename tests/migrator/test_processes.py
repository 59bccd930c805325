"""`relink migrator` as real processes SIGKILLed mid-work: the group and the database finish it.

Two processes in one consumer group share the partitions of
`provider.switched`; one dies mid-migration and the other takes its
partitions and its leased rows over. A process killed mid-rollback (twice:
while restoring sessions, then while deleting the new meetings) is restarted
and the rollback ends as if nothing had happened.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from services.core.settings import CommonSettings
from tests.migrator.conftest import (
    migration_rows,
    read_topic,
    session_rows,
    settled,
    switch_row,
    wait_for,
)
from tests.migrator.factory import Factory, Tutor
from tests.migrator.processes import (
    FAST_PROCESS,
    assigned_partitions,
    count_where,
    partition_of,
    planned_switches,
    tutors_on_partitions,
    unfinished_creates,
)
from tests.migrator.test_rollback import (
    assert_back_on_zoom,
    connection,
    live_meetings,
    outbox_events,
    request_rollback,
)

PARTITIONS = 3  # the test topics' partitions (tests/conftest.py)
SESSIONS = 6


async def test_two_processes_share_partitions_and_one_takes_over_when_the_other_dies(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
    tmp_path: Path,
) -> None:
    topic = settings.topic_provider_switched
    # Wave 1 switches while both run; wave 2 only after one is dead, so its
    # events sit on the dead process's partitions until the group moves them.
    wave1 = await tutors_on_partitions(factory, per_partition=2, partitions=PARTITIONS)
    wave2 = await tutors_on_partitions(factory, per_partition=1, partitions=PARTITIONS)
    tutors = [t for group in (wave1, wave2) for ts in group.values() for t in ts]
    sessions: dict[uuid.UUID, list[uuid.UUID]] = {}
    for tutor in tutors:
        sessions[tutor.id] = factory.sessions(tutor, count=SESSIONS)
        # Slow Meet creates keep every switch under way when the kill comes.
        await sim_admin.faults("google_meet", tutor.email, latency_ms=300)

    small = {**FAST_PROCESS, "RELINK_MIGRATOR_TUTOR_CONCURRENCY": "1"}
    doomed = start_migrator(**small, RELINK_MIGRATOR_DATADIR=str(tmp_path / "faust-a"))
    survivor = start_migrator(**small, RELINK_MIGRATOR_DATADIR=str(tmp_path / "faust-b"))

    def shared() -> tuple[set[int], set[int]] | None:
        mine = assigned_partitions(doomed.output(), topic)
        theirs = assigned_partitions(survivor.output(), topic)
        if mine and theirs and not mine & theirs and mine | theirs == set(range(PARTITIONS)):
            return mine, theirs
        return None

    doomed_parts, _ = wait_for(shared, what="both processes hold partitions", every=0.5)

    first = {
        t.id: factory.switch(t, to_provider="google_meet") for ts in wave1.values() for t in ts
    }
    # Killed once every wave-1 switch is planned (each by its partition's owner)
    # and the doomed process has migrated a session, with more rows in flight.
    wait_for(
        lambda: (
            "session migrated" in doomed.output()
            and all(switch_row(engine, s).state != "PENDING" for s in first.values())
        ),
        what="the doomed process migrating",
        every=0.05,
    )
    doomed.kill()
    in_flight = unfinished_creates(doomed.output())
    assert not all(settled(engine, s) for s in first.values()), "all done before the kill"
    second = {ts[0].id: factory.switch(ts[0], to_provider="google_meet") for ts in wave2.values()}

    for switch_id in [*first.values(), *second.values()]:
        switch = wait_for(partial(settled, engine, switch_id), what="every switch settles")
        assert (switch.state, switch.sessions_migrated, switch.sessions_total) == (
            "COMPLETED",
            SESSIONS,
            SESSIONS,
        )
    assert assigned_partitions(survivor.output(), topic) == set(range(PARTITIONS))

    # Each process planned the switches of its own partitions; the survivor
    # also those that arrived on the dead one's partitions after it died.
    dead_plans = planned_switches(doomed.output())
    live_plans = planned_switches(survivor.output())
    for tutor_id, switch_id in first.items():
        owner = (
            dead_plans
            if partition_of(tutor_id, partitions=PARTITIONS) in doomed_parts
            else live_plans
        )
        assert owner.get(str(switch_id)) == SESSIONS
    for switch_id in second.values():
        assert live_plans.get(str(switch_id)) == SESSIONS
        assert str(switch_id) not in dead_plans
    taken_over = [
        s for t, s in second.items() if partition_of(t, partitions=PARTITIONS) in doomed_parts
    ]
    assert taken_over, "no late switch landed on the dead process's partitions"
    assert "session migrated" in survivor.output()

    # The events really sat where the test computed (the relay's murmur2).
    published = read_topic(
        settings.kafka_bootstrap_servers,
        topic,
        until=lambda got: len(got) >= len(first) + len(second),
    )
    assert all(m.partition == partition_of(m.key, partitions=PARTITIONS) for m in published)

    # A meeting the dead process created but did not apply is the one its
    # session got (Google's event id is derived from switch + session).
    on = {
        str(r.id): r.meeting_external_id
        for t in tutors
        for r in session_rows(engine, sessions[t.id])
    }
    assert {s: on[s] for s in in_flight} == in_flight

    # Exactly one meeting per session at the provider, the one the session is on.
    for tutor in tutors_with_switches(tutors, first, second):
        rows = session_rows(engine, sessions[tutor.id])
        assert all(r.provider == "google_meet" for r in rows)
        live = await sim_admin.account("google_meet", tutor.email)
        assert sorted(str(m["id"]) for m in live["meetings"]) == sorted(
            r.meeting_external_id for r in rows
        )


def tutors_with_switches(tutors: list[Tutor], *switches: dict[uuid.UUID, uuid.UUID]) -> list[Tutor]:
    switched = {t for group in switches for t in group}
    return [t for t in tutors if t.id in switched]


def waiting_on_a_lock(engine: Engine) -> int:
    """Backends of this test's database blocked on a lock (the migrator's restore)."""
    return count_where(
        engine,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'",
    )


async def test_rollback_killed_twice_finishes_after_restart(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
) -> None:
    count = 8
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=count, provider="zoom")
    await factory.real_meetings(tutor, sessions, provider="zoom")
    before = {r.id: r for r in session_rows(engine, sessions)}
    old_zoom = await live_meetings(sim_admin, "zoom", tutor.email)

    # Two rows per rollback transaction and one deletion at a time: room to kill in between.
    small = {
        **FAST_PROCESS,
        "RELINK_MIGRATOR_PLAN_BATCH_SIZE": "2",
        "RELINK_MIGRATOR_TUTOR_CONCURRENCY": "1",
    }
    first = start_migrator(**small)
    switch_id = factory.switch(tutor, to_provider="google_meet")
    assert wait_for(lambda: settled(engine, switch_id), what="switch settles").state == "COMPLETED"
    new_meet = await live_meetings(sim_admin, "google_meet", tutor.email)
    assert len(new_meet) == count
    creates = {
        p: (await sim_admin.account(p, tutor.email))["create_calls"]
        for p in ("zoom", "google_meet")
    }

    # Kill 1, mid-restore: a row the restore reaches third is held by the test, so
    # the migrator has put back four sessions and waits on the fifth when it dies.
    rows = migration_rows(engine, switch_id)
    held = sorted(r.id for r in rows)[4]
    with engine.connect() as blocker:
        blocker.execute(
            text("SELECT id FROM session_migrations WHERE id = :id FOR UPDATE"), {"id": held}
        )
        request_rollback(engine, settings, tutor=tutor, switch=switch_id)
        wait_for(
            lambda: (
                waiting_on_a_lock(engine) > 0
                and Counter(r.state for r in migration_rows(engine, switch_id))
                == {"ROLLED_BACK": 4, "MIGRATED": 4}
            ),
            what="four sessions restored, the restore waiting on the held row",
        )
        first.kill()
        blocker.rollback()
    assert switch_row(engine, switch_id).state == "ROLLING_BACK"

    # Kill 2, mid-deletion: slow deletes at Meet, killed once some are recorded.
    await sim_admin.faults("google_meet", tutor.email, latency_ms=600)
    second = start_migrator(**small)
    wait_for(
        lambda: (
            count_where(
                engine,
                "SELECT count(*) FROM session_migrations WHERE switch_id = :id "
                "AND new_meeting_deleted_at IS NOT NULL",
                id=switch_id,
            )
            >= 2
        ),
        what="some new meetings deleted",
        every=0.05,
    )
    second.kill()
    after_kill = migration_rows(engine, switch_id)
    assert {r.state for r in after_kill} == {"ROLLED_BACK"}
    assert sum(r.new_meeting_deleted_at is not None for r in after_kill) < count
    assert switch_row(engine, switch_id).state == "ROLLING_BACK"

    await sim_admin.faults("google_meet", tutor.email, latency_ms=0)
    start_migrator(**small)
    switch = wait_for(
        lambda: (row := switch_row(engine, switch_id)).state == "ROLLED_BACK" and row,
        what="switch rolled back",
    )
    assert switch.rolled_back_at is not None

    # Every session on its previous meeting and link; no meeting created anywhere;
    # the switch's Meet meetings all gone.
    await assert_back_on_zoom(engine, sim_admin, tutor, sessions, before=before, old_zoom=old_zoom)
    for provider, made in creates.items():
        assert (await sim_admin.account(provider, tutor.email))["create_calls"] == made
    final = migration_rows(engine, switch_id)
    assert {r.state for r in final} == {"ROLLED_BACK"}
    assert all(r.new_meeting_deleted_at is not None for r in final)
    assert {r.new_meeting_external_id for r in final} == new_meet
    conn = connection(engine, tutor.id)
    assert conn.provider == "zoom" and conn.previous_access_token_encrypted is None

    # The events once each: in the outbox, and on the topics once the relay is through.
    back = [
        p for p in outbox_events(engine, "session.migrated", switch_id) if p["kind"] == "rollback"
    ]
    assert sorted(p["session_id"] for p in back) == sorted(str(s) for s in sessions)
    assert len(outbox_events(engine, "switch.rolled_back", switch_id)) == 1
    wait_for(
        lambda: count_where(engine, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0,
        what="the relay publishes everything",
    )
    migrated = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_session_migrated,
        until=lambda got: len(got) >= 2 * count,
    )
    told = Counter(
        m.event.data["session_id"] for m in migrated if m.event.data["kind"] == "rollback"
    )
    assert told == Counter({str(s): 1 for s in sessions})
    switched = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_provider_switched,
        until=lambda got: any(m.event.type == "switch.rolled_back" for m in got),
    )
    assert [
        m.event.data["sessions_restored"] for m in switched if m.event.type == "switch.rolled_back"
    ] == [count]


async def test_rollback_while_creates_are_in_flight_leaves_no_meeting_behind(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=6, provider="zoom")
    await factory.real_meetings(tutor, sessions, provider="zoom")
    before = {r.id: r for r in session_rows(engine, sessions)}
    await sim_admin.faults("google_meet", tutor.email, latency_ms=6000)
    migrator = start_migrator(**FAST_PROCESS, RELINK_MIGRATOR_TUTOR_CONCURRENCY="3")
    switch_id = factory.switch(tutor, to_provider="google_meet")

    def claimed() -> int:
        return count_where(
            engine,
            "SELECT count(*) FROM session_migrations WHERE switch_id = :id AND state = 'PENDING' "
            "AND attempts > 0 AND next_attempt_at > now()",
            id=switch_id,
        )

    wait_for(
        lambda: any(m.state == "MIGRATED" for m in migration_rows(engine, switch_id)) and claimed(),
        what="sessions migrated and more creates on their way",
        every=0.05,
    )
    in_flight = claimed()
    time.sleep(0.5)  # the creates are waiting at the slow simulator now
    # The rollback itself meets a fast provider: it ends while the creates still wait.
    await sim_admin.faults("google_meet", tutor.email, latency_ms=0)
    request_rollback(engine, settings, tutor=tutor, switch=switch_id)
    wait_for(lambda: switch_row(engine, switch_id).state == "ROLLED_BACK", what="rolled back")
    wait_for(
        lambda: migrator.output().count("row settled meanwhile") >= in_flight,
        what="the creates in flight come back after the rollback",
    )

    for row in session_rows(engine, sessions):
        assert (row.provider, row.meeting_external_id) == (
            "zoom",
            before[row.id].meeting_external_id,
        )
    left: set[str] = set()
    for _ in range(50):  # their meetings are deleted right after they come back
        left = await live_meetings(sim_admin, "google_meet", tutor.email)
        if not left:
            break
        await asyncio.sleep(0.1)
    assert left == set()


async def test_a_stopped_migrator_hands_back_the_rows_it_claimed_ahead(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    """SIGTERM with one create under way and two rows claimed ahead: those two are due at once.

    Left to their lease they would wait CLAIM_LEASE_S (120 s) for the next process.
    """
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=6, provider="google_meet")
    await sim_admin.faults("zoom", tutor.email, latency_ms=3000)
    # One create at a time; the executor claims 2 x max(1, 1 // 10) = 2 rows ahead.
    slow = {"RELINK_MIGRATOR_CONCURRENCY": "1", "RELINK_MIGRATOR_TUTOR_CONCURRENCY": "5"}
    migrator = start_migrator(**slow)
    switch_id = factory.switch(tutor, to_provider="zoom")
    wait_for(
        lambda: sum(m.attempts for m in migration_rows(engine, switch_id)) == 3,
        what="one row at Zoom, two claimed ahead",
    )
    migrator.stop()  # SIGTERM: the create under way finishes, the two ahead are handed back

    rows = migration_rows(engine, switch_id)
    handed_back = [m for m in rows if m.last_error == "not started (stopping)"]
    assert len(handed_back) == 2, [(m.state, m.attempts, m.last_error) for m in rows]
    with engine.connect() as conn:
        now = conn.execute(text("SELECT now()")).scalar_one()
    assert all(m.state == "PENDING" and m.attempts == 0 for m in handed_back)
    assert all(m.next_attempt_at <= now for m in handed_back)
    # No row is left behind a lease: everything unsettled is due now.
    assert all(m.next_attempt_at <= now for m in rows if m.state == "PENDING")

    await sim_admin.faults("zoom", tutor.email, latency_ms=0)
    start_migrator(**slow)
    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles", timeout_s=60)
    assert (switch.state, switch.sessions_migrated) == ("COMPLETED", 6)
    assert all(r.provider == "zoom" for r in session_rows(engine, sessions))
    account = await sim_admin.account("zoom", tutor.email)
    assert account["create_calls"] == 6 and len(account["meetings"]) == 6
