"""The students' calendar updates under redelivery and resending (issue 19): real Kafka, real
PostgreSQL, the real notifier and SMTP sink, the calendar parsed with `icalendar`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, text

from devtools.smtp_sink.sink import SmtpSink
from services.core import events
from services.core.settings import CommonSettings
from services.notifier.settings import NotifierSettings
from tests.notifier.conftest import (
    OLD_ZOOM_URL,
    calendar_of,
    make_world,
    migrated_event,
    produce,
    rows,
    running_notifier,
    wait_for,
)


def sequences(mails: list[Any]) -> list[int]:
    return [int(calendar_of(m).walk("VEVENT")[0]["sequence"]) for m in mails]


def test_redelivered_and_resent_updates_keep_their_sequence_and_a_rollback_raises_it(
    engine: Engine,
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    smtp_sink: SmtpSink,
) -> None:
    world = make_world(engine, sessions_per_student=[1], timezones=["Europe/Berlin"])
    session = world.sessions[0]
    with engine.begin() as db:
        db.execute(
            text("UPDATE bookings SET timezone = 'Europe/Berlin' WHERE id = :b"),
            {"b": session["booking_id"]},
        )
    moved = migrated_event(world, session)
    # the same event three times, and the same change again under a new event id
    produce(settings, [moved], times=3)
    produce(settings, [migrated_event(world, session)])
    settings_with_uid = notifier_settings.model_copy(
        update={"ical_uid_template": "lesson-{booking_id}@platform.example"}
    )

    with running_notifier(settings_with_uid):
        wait_for(lambda: len(smtp_sink.mails()) >= 1, what="the move email")
        wait_for(
            lambda: rows(engine, "SELECT state FROM notifications")[0][0] == "SENT",
            what="the email marked sent",
        )
        # The notifier dies between the server's 250 and its COMMIT (the README's one
        # duplicate window): the row is still PENDING when it comes back, and it resends.
        with engine.begin() as db:
            db.execute(text("UPDATE notifications SET state = 'PENDING', sent_at = NULL"))
        wait_for(lambda: len(smtp_sink.mails()) >= 2, what="the resent email")

        produce(settings, [migrated_event(world, session, kind="rollback")])
        wait_for(lambda: len(smtp_sink.mails()) >= 3, what="the rollback email")

    first, resent, back = smtp_sink.mails()
    assert len(smtp_sink.mails()) == 3
    assert (first.message_id, first.subject) == (resent.message_id, resent.subject)
    # the resend carries the same update: same UID, SEQUENCE and DTSTAMP, byte for byte
    assert calendar_of(first).to_ical() == calendar_of(resent).to_ical()
    assert sequences([first, resent, back]) == [1, 1, 2]
    for mail in (first, back):
        (event,) = calendar_of(mail).walk("VEVENT")
        assert str(event["uid"]) == f"lesson-{session['booking_id']}@platform.example"
        assert event["dtstart"].params["TZID"] == "Europe/Berlin"
        assert event.decoded("dtstart") == session["starts"]
    assert str(calendar_of(first).walk("VEVENT")[0]["location"]) == session["join_url"]
    assert str(calendar_of(back).walk("VEVENT")[0]["location"]) == OLD_ZOOM_URL


@pytest.mark.parametrize("template", ["{session}@x", "{0}@x", "", "a\n{session_id}"])
def test_a_bad_uid_template_is_refused_at_start(
    notifier_settings: NotifierSettings, template: str
) -> None:
    values = notifier_settings.model_dump(by_alias=True)
    values["RELINK_NOTIFIER_ICAL_UID_TEMPLATE"] = template
    with pytest.raises(ValidationError, match="RELINK_NOTIFIER_ICAL_UID_TEMPLATE"):
        NotifierSettings(**values)


def test_a_re_created_meeting_updates_the_calendar_after_the_move(
    engine: Engine,
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    smtp_sink: SmtpSink,
) -> None:
    world = make_world(engine, sessions_per_student=[1])
    session = world.sessions[0]
    produce(settings, [migrated_event(world, session)])
    with running_notifier(notifier_settings):
        wait_for(lambda: len(smtp_sink.mails()) >= 1, what="the move email")
        # the tutor re-creates the meeting deleted at Google (what the gateway commits)
        new_url = "https://meet.google.com/abc-again-001"
        with engine.begin() as db:
            db.execute(
                text(
                    "UPDATE sessions SET meeting_external_id = 'abc-again-001', join_url = :u"
                    " WHERE id = :id"
                ),
                {"u": new_url, "id": session["id"]},
            )
        recreated = events.new_event(
            "session.meeting_recreated",
            {
                "tutor_id": str(world.tutor_id),
                "session_id": str(session["id"]),
                "student_id": str(session["student"].id),
                "scheduled_start_at": session["starts"].isoformat(),
                "provider": "google_meet",
                "meeting_external_id": "abc-again-001",
                "join_url": new_url,
                "deleted_meeting_external_id": session["meeting"],
                "recreated_at": datetime.now(UTC).isoformat(),
            },
            tutor_id=str(world.tutor_id),
            source="/relink/oauth-gateway",
        )
        produce(settings, [recreated])
        wait_for(lambda: len(smtp_sink.mails()) >= 2, what="the new-link email")

    moved, again = smtp_sink.mails()
    assert "new Google Meet link" in again.subject
    assert sequences([moved, again]) == [1, 2]
    (event,) = calendar_of(again).walk("VEVENT")
    assert str(event["uid"]) == f"{session['id']}@relink.invalid"
    assert str(event["location"]) == str(event["url"]) == new_url
