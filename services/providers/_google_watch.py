"""Google Calendar push notifications: open and close an events.watch channel.

Calendar API v3 "Push notifications" (developers.google.com/calendar/api/guides/push):
`POST /calendar/v3/calendars/{calendarId}/events/watch` with `{"id", "type":
"web_hook", "address", "token", "params": {"ttl"}}` answers a Channel
(`id`, `resourceId`, `resourceUri`, `token`, `expiration` in epoch ms).
Google then POSTs to `address` with no body and the headers
`X-Goog-Channel-ID`, `X-Goog-Channel-Token`, `X-Goog-Resource-ID`,
`X-Goog-Resource-State` (`sync` first, then `exists` / `not_exists`) and
`X-Goog-Message-Number`. The notification does not say which event changed.
`POST /calendar/v3/channels/stop` with `{"id", "resourceId"}` closes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.providers._base import json_body
from services.providers._errors import InvalidRequestError
from services.providers._google import EVENTS, GoogleMeetClient


@dataclass(frozen=True, slots=True)
class WatchChannel:
    """An open notification channel on the tutor's primary calendar."""

    id: str
    resource_id: str
    expires_at: datetime


async def watch_events(
    client: GoogleMeetClient,
    access_token: str,
    *,
    channel_id: str,
    address: str,
    token: str,
    ttl_s: int,
) -> WatchChannel:
    """Open a channel: Google will notify `address` when the calendar's events change."""
    response = await client.api_call(
        "POST",
        f"{client.settings.google_api_base}{EVENTS}/watch",
        access_token=access_token,
        operation="watch events",
        json={
            "id": channel_id,
            "type": "web_hook",
            "address": address,
            "token": token,
            "params": {"ttl": str(ttl_s)},
        },
    )
    body = json_body(response)
    resource = body.get("resourceId")
    if not isinstance(resource, str) or not resource:
        raise InvalidRequestError("watch answered without a resourceId", provider="google_meet")
    try:
        expires = datetime.fromtimestamp(int(body["expiration"]) / 1000, UTC)
    except (KeyError, TypeError, ValueError):
        expires = datetime.now(UTC) + timedelta(seconds=ttl_s)
    return WatchChannel(id=channel_id, resource_id=resource, expires_at=expires)
