"""Students' calendars follow the move (issue 19): a real switch and its rollback, through the
relay, `relink migrator`, the simulator and the real notifier, read from the SMTP sink and
parsed with `icalendar`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, text

from devtools.smtp_sink.sink import SmtpSink
from services.core.settings import CommonSettings
from tests.migrator.conftest import session_rows, settled, switch_row, wait_for
from tests.migrator.factory import Factory
from tests.migrator.test_rollback import request_rollback
from tests.notifier.conftest import calendar_of

SESSION_ZONE = "America/New_York"


def mails_to(sink: SmtpSink, email: str, subject: str) -> Callable[[], list[Any]]:
    """What `email` received with `subject` in its subject, for `wait_for`."""

    def received() -> list[Any]:
        return [m for m in sink.mails() if m.rcpt_to == (email,) and subject in m.subject]

    return received


async def test_moved_and_restored_sessions_update_the_students_calendars(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    relay: Any,
    tutor_mail: SmtpSink,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="zoom", students=2)
    sessions = factory.sessions(tutor, count=2, provider="zoom")
    await factory.real_meetings(tutor, sessions, provider="zoom")
    with engine.begin() as db:
        # the platform booked them in New York; the students read their mail in Tokyo
        db.execute(
            text("UPDATE bookings SET timezone = :z WHERE tutor_id = :t"),
            {"z": SESSION_ZONE, "t": tutor.id},
        )
        db.execute(
            text("UPDATE users SET timezone = 'Asia/Tokyo' WHERE id = ANY(:ids)"),
            {"ids": tutor.students},
        )
    before = {r.id: r for r in session_rows(engine, sessions)}
    students = {
        r.id: r.email
        for r in engine.connect().execute(
            text("SELECT id, email FROM users WHERE id = ANY(:ids)"), {"ids": tutor.students}
        )
    }

    start_migrator()
    switch_id = factory.switch(tutor, to_provider="google_meet")
    assert wait_for(lambda: settled(engine, switch_id), what="switch settles").state == "COMPLETED"
    moved = {r.id: r for r in session_rows(engine, sessions)}

    for session_id, row in moved.items():
        email = students[row.student_id]
        (mail,) = wait_for(
            mails_to(tutor_mail, email, "moved to Google Meet"), what="the student's email"
        )
        calendar = calendar_of(mail)
        assert calendar["method"] == "REQUEST"
        (event,) = calendar.walk("VEVENT")
        assert str(event["uid"]) == f"{session_id}@relink.invalid"
        assert event["sequence"] == 1
        assert str(event["location"]) == str(event["url"]) == row.join_url
        assert row.join_url in str(event["description"])
        assert row.join_url != before[session_id].join_url
        start, end = event.decoded("dtstart"), event.decoded("dtend")
        # the session's zone, named with its VTIMEZONE; the same instant the platform booked
        assert event["dtstart"].params["TZID"] == SESSION_ZONE
        assert getattr(start.tzinfo, "key", None) == SESSION_ZONE
        assert [str(tz["tzid"]) for tz in calendar.walk("VTIMEZONE")] == [SESSION_ZONE]
        assert start == row.scheduled_start_at.replace(microsecond=0)  # iCalendar: seconds
        assert (
            start.utcoffset()
            == row.scheduled_start_at.astimezone(ZoneInfo(SESSION_ZONE)).utcoffset()
        )
        assert end - start == timedelta(minutes=45)
        assert str(event["organizer"]) == f"mailto:{tutor.email}"
        assert str(event["attendee"]) == f"mailto:{email}"

    request_rollback(engine, settings, tutor=tutor, switch=switch_id)
    wait_for(lambda: switch_row(engine, switch_id).state == "ROLLED_BACK", what="rolled back")
    for session_id, row in before.items():
        email = students[row.student_id]
        (mail,) = wait_for(
            mails_to(tutor_mail, email, "back on Zoom"), what="the student's rollback email"
        )
        calendar = calendar_of(mail)
        assert calendar["method"] == "REQUEST"
        (event,) = calendar.walk("VEVENT")
        assert str(event["uid"]) == f"{session_id}@relink.invalid"
        # the restoring update supersedes the move's: the old link back, a higher SEQUENCE
        assert event["sequence"] == 2
        assert str(event["location"]) == str(event["url"]) == row.join_url
        assert event["dtstart"].params["TZID"] == SESSION_ZONE
        assert event.decoded("dtstart") == row.scheduled_start_at.replace(microsecond=0)
    # the tutor's own emails carry no calendar update
    for mail in tutor_mail.mails():
        if mail.rcpt_to == (tutor.email,):
            assert not [p for p in mail.message.walk() if p.get_content_type() == "text/calendar"]
