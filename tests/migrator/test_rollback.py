"""Rollback inside the grace period, cleanup after it (relay, Kafka, migrator, simulator)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import sessionmaker

from devtools.smtp_sink.sink import SmtpSink
from services.core import events
from services.core.db.models import Outbox
from services.core.settings import CommonSettings
from services.oauth_gateway.adapters.db import GatewayStore
from tests.migrator.conftest import (
    migration_rows,
    read_topic,
    session_rows,
    settled,
    switch_row,
    wait_for,
)
from tests.migrator.factory import Factory

FAST_CLEANUP = {"RELINK_MIGRATOR_CLEANUP_INTERVAL_S": "1"}


def request_rollback(engine: Engine, settings: CommonSettings, *, tutor: Any, switch: Any) -> None:
    """The gateway's own rollback transaction (connection swap, ROLLING_BACK, outbox row)."""
    store = GatewayStore(sessionmaker(engine), cipher=settings.token_cipher(), topics=settings)
    store.request_rollback(tutor_id=tutor.id, switch_id=switch, now=datetime.now(UTC))


def connection(engine: Engine, tutor_id: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT * FROM tutor_video_provider_connections WHERE tutor_id = :t"),
            {"t": tutor_id},
        ).one()


def outbox_events(engine: Engine, event_type: str, switch_id: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            r.payload
            for r in conn.execute(
                text(
                    # In outbox order: without ORDER BY, PostgreSQL returns rows in
                    # heap order, and the relay's `published_at` update moves a row
                    # (a day-1 event marked after the day-2 one came back second).
                    "SELECT payload FROM outbox WHERE event_type = :t "
                    "AND payload->>'switch_id' = :s ORDER BY id"
                ),
                {"t": event_type, "s": str(switch_id)},
            )
        ]


async def assert_back_on_zoom(
    engine: Engine,
    sim_admin: Any,
    tutor: Any,
    sessions: list[Any],
    *,
    before: dict[Any, Any],
    old_zoom: set[str],
) -> None:
    """Each session on its previous Zoom meeting and link; the Zoom meetings are the old
    ones and no Meet meeting is left."""
    for row in session_rows(engine, sessions):
        old = before[row.id]
        assert (row.provider, row.meeting_external_id, row.join_url) == (
            "zoom",
            old.meeting_external_id,
            old.join_url,
        )
    assert await live_meetings(sim_admin, "zoom", tutor.email) == old_zoom
    assert await live_meetings(sim_admin, "google_meet", tutor.email) == set()


async def live_meetings(sim_admin: Any, provider: str, email: str) -> set[str]:
    account = await sim_admin.account(provider, email)
    return {str(m["id"]) for m in account["meetings"]}


async def test_rollback_restores_previous_meetings_and_deletes_the_new_ones(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=4, provider="zoom")
    await factory.real_meetings(tutor, sessions, provider="zoom")
    before = {r.id: r for r in session_rows(engine, sessions)}
    old_zoom = await live_meetings(sim_admin, "zoom", tutor.email)
    assert old_zoom == {r.meeting_external_id for r in before.values()}

    migrator = start_migrator(**FAST_CLEANUP)
    switch_id = factory.switch(tutor, to_provider="google_meet")
    assert wait_for(lambda: settled(engine, switch_id), what="switch settles").state == "COMPLETED"
    assert len(await live_meetings(sim_admin, "google_meet", tutor.email)) == 4

    request_rollback(engine, settings, tutor=tutor, switch=switch_id)
    switch = wait_for(
        lambda: (row := switch_row(engine, switch_id)).state == "ROLLED_BACK" and row,
        what="switch rolled back",
    )
    assert switch.rolled_back_at is not None

    # Every session is back on its previous meeting and link; no meeting was created.
    await assert_back_on_zoom(engine, sim_admin, tutor, sessions, before=before, old_zoom=old_zoom)
    rows = migration_rows(engine, switch_id)
    assert {r.state for r in rows} == {"ROLLED_BACK"}
    assert all(r.new_meeting_deleted_at is not None for r in rows)
    # The tutor is on Zoom again; the Meet tokens kept for the deletions are forgotten.
    conn = connection(engine, tutor.id)
    assert conn.provider == "zoom" and conn.previous_access_token_encrypted is None

    migrated = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_session_migrated,
        until=lambda got: sum(m.event.data["kind"] == "rollback" for m in got) >= 4,
    )
    back = [m.event.data for m in migrated if m.event.data["kind"] == "rollback"]
    assert sorted(p["session_id"] for p in back) == sorted(str(s) for s in sessions)
    for payload in back:
        old = before[uuid.UUID(payload["session_id"])]
        assert payload["provider"] == "zoom" and payload["previous_provider"] == "google_meet"
        assert payload["join_url"] == old.join_url
        assert payload["meeting_external_id"] == old.meeting_external_id
    switched = read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic_provider_switched,
        until=lambda got: any(m.event.type == "switch.rolled_back" for m in got),
    )
    done = [m.event.data for m in switched if m.event.type == "switch.rolled_back"]
    assert done == [
        {
            "switch_id": str(switch_id),
            "tutor_id": str(tutor.id),
            "restored_provider": "zoom",
            "sessions_restored": 4,
            "sessions_failed": 0,
            "rolled_back_at": done[0]["rolled_back_at"],
        }
    ]

    # The request delivered again changes nothing more.
    versions = {r.id: r.version for r in session_rows(engine, sessions)}
    request = outbox_events(engine, "switch.rollback_requested", switch_id)[0]
    handled = migrator.output().count("switch is ROLLED_BACK; nothing to do")
    with engine.begin() as db:
        db.execute(
            insert(Outbox).values(
                **events.outbox_row(
                    "switch.rollback_requested",
                    request,
                    tutor_id=str(tutor.id),
                    source="/relink/tests/redelivery",
                    topics=settings,
                )
            )
        )
    wait_for(
        lambda: migrator.output().count("switch is ROLLED_BACK; nothing to do") > handled,
        what="the redelivered request is handled",
    )
    assert {r.id: r.version for r in session_rows(engine, sessions)} == versions
    assert len(outbox_events(engine, "session.migrated", switch_id)) == 8  # 4 there, 4 back
    assert len(outbox_events(engine, "switch.rolled_back", switch_id)) == 1
    assert await live_meetings(sim_admin, "zoom", tutor.email) == old_zoom


async def test_cleanup_after_the_grace_period_deletes_old_meetings_and_forgets_old_tokens(
    engine: Engine,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=3, provider="zoom")
    await factory.real_meetings(tutor, sessions, provider="zoom")
    assert len(await live_meetings(sim_admin, "zoom", tutor.email)) == 3

    start_migrator(**FAST_CLEANUP)
    switch_id = factory.switch(tutor, to_provider="google_meet")
    assert wait_for(lambda: settled(engine, switch_id), what="switch settles").state == "COMPLETED"
    # Inside the grace period the old meetings stay (a rollback needs them).
    assert len(await live_meetings(sim_admin, "zoom", tutor.email)) == 3
    assert switch_row(engine, switch_id).old_meetings_cleaned_at is None

    with engine.begin() as db:  # the request's deadline, and the progress row's copy
        for table in ("switch_requests", "provider_switches"):
            db.execute(
                text(f"UPDATE {table} SET rollback_deadline = :d WHERE id = :id"),
                {"d": datetime.now(UTC) - timedelta(seconds=1), "id": switch_id},
            )
    wait_for(
        lambda: switch_row(engine, switch_id).old_meetings_cleaned_at is not None,
        what="old meetings cleaned",
    )
    assert await live_meetings(sim_admin, "zoom", tutor.email) == set()
    new_meetings = await live_meetings(sim_admin, "google_meet", tutor.email)
    rows = session_rows(engine, sessions)
    assert {r.meeting_external_id for r in rows} == new_meetings and len(new_meetings) == 3
    assert all(r.provider == "google_meet" for r in rows)
    assert all(m.previous_meeting_deleted_at is not None for m in migration_rows(engine, switch_id))
    conn = connection(engine, tutor.id)
    assert conn.provider == "google_meet"
    assert (conn.previous_provider, conn.previous_access_token_encrypted) == (None, None)
    assert conn.previous_refresh_token_encrypted is None


def tutor_switches(engine: Engine, tutor_id: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT * FROM switch_requests WHERE tutor_id = :t ORDER BY generation"),
                {"t": tutor_id},
            )
        )


async def test_rollback_right_after_a_double_switch_creates_no_meeting_and_no_switch(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    tutor_mail: SmtpSink,
    start_migrator: Any,
) -> None:
    """Zoom → Meet (superseded before it moved anything) → Zoom, then roll the last one back.

    Issue 17, defect 1: the rollback made a Meet → Zoom… follow-up switch the
    tutor never made, created meetings, and the tutor was emailed "N of N
    sessions moved" for it. Rolling back undoes what the switch did, nothing
    more: the sessions it never moved keep the live meeting they have.
    """
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=3, provider="zoom")
    await factory.real_meetings(tutor, sessions, provider="zoom")
    before = {r.id: r for r in session_rows(engine, sessions)}
    to_meet = factory.switch(tutor, to_provider="google_meet")
    back_to_zoom = factory.switch(tutor, to_provider="zoom")
    start_migrator(**FAST_CLEANUP)
    assert wait_for(lambda: settled(engine, to_meet), what="first settles").state == "SUPERSEDED"
    assert wait_for(lambda: settled(engine, back_to_zoom), what="second settles")
    meetings_before = {
        provider: await live_meetings(sim_admin, provider, tutor.email)
        for provider in ("zoom", "google_meet")
    }
    assert meetings_before["zoom"] == {r.meeting_external_id for r in before.values()}

    request_rollback(engine, settings, tutor=tutor, switch=back_to_zoom)
    wait_for(lambda: switch_row(engine, back_to_zoom).state == "ROLLED_BACK", what="rollback ends")
    assert connection(engine, tutor.id).provider == "google_meet"

    # No switch the tutor never made: the two of hers, and no provider.switched besides.
    assert [r.id for r in tutor_switches(engine, tutor.id)] == [to_meet, back_to_zoom]
    with engine.connect() as db:
        published = db.execute(
            text(
                "SELECT count(*) FROM outbox WHERE event_type = 'provider.switched' "
                "AND payload->>'tutor_id' = :t"
            ),
            {"t": str(tutor.id)},
        ).scalar_one()
    assert published == 2
    # Every session keeps the live Zoom meeting it had (the switch never moved it)…
    for row in session_rows(engine, sessions):
        old = before[row.id]
        assert (row.provider, row.meeting_external_id, row.join_url) == (
            "zoom",
            old.meeting_external_id,
            old.join_url,
        )
    # …and it is its only meeting: the rollback created none, at either provider.
    for provider in ("zoom", "google_meet"):
        assert await live_meetings(sim_admin, provider, tutor.email) <= meetings_before[provider]
    assert await live_meetings(sim_admin, "google_meet", tutor.email) == set()

    # The tutor hears of the rollback, and is told of no move that did not happen.
    wait_for(
        lambda: any("Google Meet" in m.subject for m in tutor_mail.mails()),
        what="the rollback email (Google Meet is connected again)",
    )
    mails = tutor_mail.mails()
    assert {m.rcpt_to for m in mails} == {(tutor.email,)}  # no session moved: no student emailed
    for mail in mails:
        assert not re.search(r"\b[1-9]\d* of \d+ sessions moved", mail.subject), mail.subject
        assert "back on" not in mail.subject, mail.subject  # no session went back
        assert "have been emailed" not in mail.body(), mail.body()
