"""The students' calendar updates: iCalendar (RFC 5545) objects carrying an iTIP method (RFC 5546).

A student who saved the session in their calendar keeps the old link there unless the
email carries an update of that event: `METHOD:REQUEST` with the invitation's `UID`
and a higher `SEQUENCE` (RFC 5546 §2.1.4: "the attendee's calendar updates the event
when the SEQUENCE is greater"), the new link as `LOCATION` and `URL` and in the
`DESCRIPTION`. The times are written in the session's time zone (`TZID` with its
`VTIMEZONE`, generated from zoneinfo), so the calendar shows it as the platform booked it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage

from icalendar import Calendar, Event, vCalAddress, vText

from services.notifier.domain import provider_name, zone

PRODID = "-//relink//notifier//EN"
REQUEST, CANCEL = "REQUEST", "CANCEL"
# The .ics attachment's name (calendar apps that ignore the inline part open this one).
ATTACHMENT = "invite.ics"
DEFAULT_DURATION_MIN = 60


@dataclass(frozen=True, slots=True)
class CalendarUpdate:
    """One session's event as the student's calendar should now hold it."""

    method: str  # REQUEST or CANCEL
    uid: str
    sequence: int
    stamp: datetime  # DTSTAMP: when this update was made (the change's time)
    starts_at: datetime  # UTC instant
    duration_minutes: int | None
    timezone: str | None  # the session's IANA zone (UTC when unknown)
    summary: str
    join_url: str
    provider: str
    organizer_email: str | None
    organizer_name: str | None
    attendee_email: str
    attendee_name: str | None


def render_calendar(update: CalendarUpdate) -> str:
    """The iCalendar text (CRLF lines) of one update."""
    tz = zone(update.timezone)
    start = update.starts_at.astimezone(tz)
    end = start + timedelta(minutes=update.duration_minutes or DEFAULT_DURATION_MIN)
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", update.method)
    event = Event()
    event.add("uid", update.uid)
    event.add("sequence", update.sequence)
    event.add("dtstamp", update.stamp.astimezone(UTC))
    event.add("dtstart", start)
    event.add("dtend", end)
    event.add("summary", update.summary)
    if update.method == CANCEL:
        event.add("status", "CANCELLED")
        event.add("description", "This session was cancelled.")
    else:
        event.add("status", "CONFIRMED")
        event.add("location", update.join_url)
        event.add("url", update.join_url)
        event.add(
            "description",
            f"Join on {provider_name(update.provider)}: {update.join_url}\n\n"
            "The link changed: this update replaces the one you saved before.",
        )
    if update.organizer_email:
        organizer = vCalAddress(f"mailto:{update.organizer_email}")
        if update.organizer_name:
            organizer.params["CN"] = vText(update.organizer_name)
        event.add("organizer", organizer)
    attendee = vCalAddress(f"mailto:{update.attendee_email}")
    if update.attendee_name:
        attendee.params["CN"] = vText(update.attendee_name)
    attendee.params["ROLE"] = vText("REQ-PARTICIPANT")
    attendee.params["PARTSTAT"] = vText("ACCEPTED")
    attendee.params["RSVP"] = vText("FALSE")
    event.add("attendee", attendee)
    cal.add_component(event)
    # Only the transitions around the session: the whole 1970-2038 history is ~4 kB a zone.
    cal.add_missing_timezones(
        first_date=date(start.year - 1, 1, 1), last_date=date(start.year + 2, 1, 1)
    )
    text: bytes = cal.to_ical()
    return text.decode()


def method_of(calendar: str) -> str:
    """The iTIP method of a stored calendar update (REQUEST when it names none)."""
    parsed = Calendar.from_ical(calendar)
    method: object = parsed.get("method", REQUEST)
    return str(method)


def attach_calendar(message: EmailMessage, calendar: str) -> None:
    """Add the update as calendar apps look for it: a `text/calendar; method=…` alternative
    beside the text and HTML bodies, and the same object as an `.ics` attachment."""
    method = method_of(calendar)
    message.add_alternative(calendar, subtype="calendar", params={"method": method})
    message.add_attachment(
        calendar.encode(),
        maintype="application",
        subtype="ics",
        filename=ATTACHMENT,
    )
