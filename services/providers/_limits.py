"""What a provider would refuse, checked before the request leaves relink.

Shared helpers first, then one small function per provider. A request the
provider would refuse (HTTP 400) is either made acceptable here (a long
title cut short) or refused here with `InvalidRequestError`, which fails that
one session with a clear reason instead of spending a call on it.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from functools import cache

from services.core.logs import get_logger
from services.providers._errors import InvalidRequestError
from services.providers._models import MeetingRequest

log = get_logger(__name__)

ELLIPSIS = "…"


@cache
def known_timezones() -> frozenset[str]:
    """The IANA time zone names this machine knows."""
    return frozenset(zoneinfo.available_timezones())


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, an ellipsis marking the cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - len(ELLIPSIS), 0)].rstrip() + ELLIPSIS


# -- Zoom ------------------------------------------------------------------------

# Zoom API reference, "Create a meeting": topic up to 200 characters, agenda up
# to 2,000. "List meetings" returns only the agenda's first 250 characters, and
# the in-flight dedupe finds relink's meetings by the marker in that listing.
ZOOM_TOPIC_MAX = 200
ZOOM_AGENDA_MAX = 2000
ZOOM_LISTED_AGENDA_MAX = 250
ZOOM_DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True, slots=True)
class ZoomFields:
    """The create-meeting fields, within Zoom's limits."""

    topic: str
    agenda: str
    timezone: str


def zoom_fields(request: MeetingRequest, *, marker: str, note: str = "") -> ZoomFields:
    """The topic, agenda and timezone Zoom accepts for `request`.

    - The topic is cut to 200 characters (ellipsis): a long lesson title must
      not cost the student a meeting.
    - The agenda starts with the marker, whole, so it survives both the
      2,000-character limit and the 250-character cut of "List meetings";
      `note` fills what room is left.
    - An unknown time zone becomes UTC. `start_time` goes to Zoom in GMT
      (yyyy-MM-ddTHH:mm:ssZ), so the zone only sets how Zoom displays the
      time: the meeting still starts at the booked instant. Failing the
      session for a display setting would cost the student the lesson.
    - A duration under one minute is refused here (Zoom would refuse it).
    """
    if request.duration_min < 1:
        raise InvalidRequestError(
            f"session duration {request.duration_min} min: Zoom needs at least 1 minute",
            provider="zoom",
            code="duration",
        )
    if request.start_time.tzinfo is None:
        raise InvalidRequestError(
            "session start time has no time zone", provider="zoom", code="start_time"
        )
    if len(marker) > ZOOM_LISTED_AGENDA_MAX:
        # Ids are UUIDs, so this cannot happen; a marker Zoom's listing cuts
        # would make every retry create a second meeting.
        raise InvalidRequestError(
            "meeting marker longer than Zoom lists", provider="zoom", code="agenda"
        )
    topic = shorten(request.topic, ZOOM_TOPIC_MAX)
    agenda = marker
    if note:
        agenda = shorten(f"{marker} {note}", ZOOM_AGENDA_MAX)
    timezone = request.timezone
    if timezone not in known_timezones():
        log.warning(
            "unknown time zone for a Zoom meeting; sending UTC (the start instant is unchanged)",
            extra={"session_id": request.session_id, "timezone": timezone[:64]},
        )
        timezone = ZOOM_DEFAULT_TIMEZONE
    return ZoomFields(topic=topic, agenda=agenda, timezone=timezone)
