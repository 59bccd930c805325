"""Google Meet via Google Calendar: OAuth (offline access + PKCE) and events with conferenceData."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import available_timezones

import httpx

from services.core.links import checked_join_url
from services.providers._base import ProviderClient, json_body
from services.providers._errors import (
    AuthorizationRevokedError,
    ConferenceFailedError,
    ConferencePendingError,
    DailyQuotaExhaustedError,
    ErrorContext,
    InvalidRequestError,
    MeetingNotFoundError,
    NoJoinLinkError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    TokenExpiredError,
    UsageLimitedError,
)
from services.providers._models import (
    Meeting,
    MeetingRequest,
    ProviderAccount,
    ProviderName,
    google_event_id,
    idempotency_key,
)
from services.providers._ratelimit import (
    GOOGLE_DAILY_LIMIT_REASONS,
    GOOGLE_RATE_LIMIT_REASONS,
    GOOGLE_USAGE_LIMIT_REASONS,
    next_pacific_midnight,
    retry_after_from_headers,
)

EVENTS = "/calendar/v3/calendars/primary/events"


def google_reason(body: dict[str, Any]) -> str | None:
    """The first `error.errors[].reason` of a Google API error body."""
    error = body.get("error")
    if not isinstance(error, dict):
        return None
    errors = error.get("errors") or []
    if errors and isinstance(errors[0], dict):
        return str(errors[0].get("reason") or "") or None
    status = error.get("status")
    return str(status) if status else None


def meet_link(event: dict[str, Any], *, allow_http: bool = False) -> str | None:
    """The Meet link: `hangoutLink`, else the video entry point of `conferenceData`.

    Only a link a student may be sent to counts (`checked_join_url`): an event
    whose link is anything else is an event without a link.
    """
    if event.get("hangoutLink"):
        return checked_join_url(event["hangoutLink"], allow_http=allow_http)
    for entry in (event.get("conferenceData") or {}).get("entryPoints") or []:
        if entry.get("entryPointType") == "video" and entry.get("uri"):
            return checked_join_url(entry["uri"], allow_http=allow_http)
    return None


def conference_status(event: dict[str, Any]) -> str | None:
    """`conferenceData.createRequest.status.statusCode`: pending, success or failure."""
    request = (event.get("conferenceData") or {}).get("createRequest") or {}
    status = (request.get("status") or {}).get("statusCode")
    return str(status) if status else None


# What Google refuses, checked before a request leaves relink (the simulator
# enforces the same, with sources: devtools/provider_sim/google_api.py).
# `summary` has no documented limit; 1,024 characters is a conservative cap.
SUMMARY_MAX = 1024
ELLIPSIS = "\u2026"


@cache
def known_time_zones() -> frozenset[str]:
    """IANA names: what start/end `timeZone` must be (Events resource)."""
    return frozenset(available_timezones())


def event_summary(topic: str) -> str:
    """The topic as the event's summary, cut (with an ellipsis) to what Google takes."""
    if len(topic) <= SUMMARY_MAX:
        return topic
    return topic[: SUMMARY_MAX - len(ELLIPSIS)] + ELLIPSIS


def check_request(request: MeetingRequest, *, provider: str) -> None:
    """Refuse, before any call, what Google would refuse: a clear error, nothing sent.

    A `timeZone` that is not an IANA name gets Google's 400 "Invalid time zone
    definition for start time."; a start without an offset needs a timeZone
    (Events resource, start.dateTime); RFC 3339 date-times end at year 9999.
    """
    if request.timezone not in known_time_zones():
        raise InvalidRequestError(
            f"time zone {request.timezone[:64]!r} is not an IANA time zone name",
            provider=provider,
            code="invalidTimeZone",
        )
    if request.start_time.tzinfo is None:
        raise InvalidRequestError(
            "start time has no UTC offset", provider=provider, code="invalidStartTime"
        )
    try:
        end = request.start_time + timedelta(minutes=request.duration_min)
    except OverflowError:
        end = None
    if end is None or end.year > 9999 or request.start_time.year < 1:
        raise InvalidRequestError(
            "session dates are out of range", provider=provider, code="invalidTimeRange"
        )


def event_body(request: MeetingRequest) -> dict[str, Any]:
    """The Calendar event for one session, asking for a Meet conference."""
    end = request.start_time + timedelta(minutes=request.duration_min)
    return {
        "id": google_event_id(request.switch_id, request.session_id),
        "summary": event_summary(request.topic),
        "start": {"dateTime": request.start_time.isoformat(), "timeZone": request.timezone},
        "end": {"dateTime": end.isoformat(), "timeZone": request.timezone},
        "conferenceData": {
            "createRequest": {
                # Same (switch, session) -> same requestId: Google makes no second
                # conference for a repeated requestId.
                "requestId": idempotency_key(request.switch_id, request.session_id),
                "conferenceSolutionKey": {"type": "hangoutsMeet"},
            }
        },
    }


# How many deleted events of one session a create steps over (a linkless
# event deleted, then the tutor's retry; a rollback's deletes, then a retry).
EVENT_ID_CHAIN = 8


def event_ids(request: MeetingRequest) -> list[str]:
    """The session's event ids: the derived one, then each derived from the one before.

    Google keeps a deleted event's id taken (insert answers 409, the event
    reads back `cancelled`), so a session whose event was deleted gets the
    next id of this chain: still deterministic, so a retry finds it again.
    Ids stay base32hex (a-v, 0-9), as Google requires (Events resource, `id`).
    """
    ids = [google_event_id(request.switch_id, request.session_id)]
    while len(ids) < EVENT_ID_CHAIN:
        digest = hashlib.sha256(f"relink:next:{ids[-1]}".encode()).digest()
        ids.append(base64.b32hexencode(digest).decode().rstrip("=").lower())
    return ids


def next_request_id(event: dict[str, Any], request: MeetingRequest) -> str:
    """The requestId of the next conference for an event whose conference failed.

    "Clients should regenerate this ID for every new request. If an ID
    provided is the same as for the previous request, the request is
    ignored" (Events resource, conferenceData.createRequest.requestId). It is
    derived from the failed one, so it is new for each failed attempt and yet
    the same for two retries that read the same failed event (Google ignores
    the second): no stray conferences.
    """
    create = (event.get("conferenceData") or {}).get("createRequest") or {}
    failed = str(create.get("requestId") or idempotency_key(request.switch_id, request.session_id))
    return hashlib.sha256(f"relink:retry:{failed}".encode()).hexdigest()


def needs_new_conference(event: dict[str, Any]) -> bool:
    """An earlier attempt's event whose conference failed (or never came): ask again."""
    return conference_status(event) == "failure" or (
        not event.get("conferenceData") and meet_link(event) is None
    )


def conference_poll_waits(*, first_s: float, cap_s: float, attempts: int) -> list[float]:
    """The waits before each re-read of a pending conference: `first_s`, doubling, capped."""
    waits: list[float] = []
    wait = min(first_s, cap_s)
    for _ in range(attempts):
        waits.append(wait)
        wait = min(wait * 2, cap_s)
    return waits


class GoogleMeetClient(ProviderClient):
    """Google's OAuth endpoints and the Calendar v3 events API with Meet conferences."""

    provider: ProviderName = "google_meet"
    # Event id and conference requestId both derive from (switch, session).
    idempotent_create = True
    # Google's token endpoint takes client_id / client_secret in the form body.
    token_auth_method = "client_secret_post"

    @property
    def client_id(self) -> str:
        return self.settings.google_client_id

    @property
    def client_secret(self) -> str:
        return self.settings.google_client_secret.get_secret_value()

    @property
    def authorize_url(self) -> str:
        return f"{self.settings.google_auth_base}/o/oauth2/v2/auth"

    @property
    def token_url(self) -> str:
        return f"{self.settings.google_token_base}/token"

    @property
    def revoke_url(self) -> str:
        return f"{self.settings.google_token_base}/revoke"

    @property
    def redirect_uri(self) -> str:
        return self.settings.google_redirect_uri

    @property
    def scopes(self) -> str:
        return self.settings.google_scopes

    def extra_authorize_params(self) -> dict[str, str]:
        # offline: a refresh token; consent: Google only sends the refresh token
        # on a consent screen, so a reconnect must show it again.
        return {"access_type": "offline", "prompt": "consent", "include_granted_scopes": "true"}

    def _api(self, path: str) -> str:
        return f"{self.settings.google_api_base}{path}"

    @property
    def _allow_http(self) -> bool:
        """http join links only from a local simulator reached over http (dev)."""
        return self.settings.google_api_base.startswith("http://")

    def api_error(self, response: httpx.Response, *, operation: str) -> ProviderError:
        """Google's `{"error": {"errors": [{"reason": ...}], ...}}` mapped onto our tree."""
        body = json_body(response)
        status = response.status_code
        reason = google_reason(body) or str(status)
        error = body.get("error")
        text = error.get("message") if isinstance(error, dict) else None
        message = f"{operation}: {text or response.reason_phrase}"
        common: ErrorContext = {"provider": self.provider, "status": status, "code": reason}
        if status == 401:
            return TokenExpiredError(message, **common)
        if reason in GOOGLE_USAGE_LIMIT_REASONS:
            return UsageLimitedError(message, **common)
        if reason in GOOGLE_DAILY_LIMIT_REASONS:
            return DailyQuotaExhaustedError(message, resets_at=next_pacific_midnight(), **common)
        if status == 429 or reason in GOOGLE_RATE_LIMIT_REASONS:
            return RateLimitedError(
                message, retry_after_s=retry_after_from_headers(response.headers), **common
            )
        if status >= 500:
            return ProviderUnavailableError(message, **common)
        if status in (404, 410):
            return MeetingNotFoundError(message, **common)
        if reason in ("insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"):
            return AuthorizationRevokedError(message, **common)
        return InvalidRequestError(message, **common)

    async def account(self, access_token: str) -> ProviderAccount:
        """The OpenID userinfo: `sub` and `email`."""
        response = await self.api_call(
            "GET", self._api("/oauth2/v3/userinfo"), access_token=access_token, operation="userinfo"
        )
        body = json_body(response)
        return ProviderAccount(id=str(body["sub"]), email=str(body.get("email", "")))

    async def create_meeting(self, access_token: str, request: MeetingRequest) -> Meeting:
        """events.insert with a Meet createRequest, then poll until the conference is ready.

        A retry after a failed conference (Google's `statusCode: failure`)
        asks for a new one on the same event, under a new requestId: the
        event id stays the one derived from (switch, session), so there is
        never a second live event for the session.
        """
        check_request(request, provider=self.provider)
        body = event_body(request)
        for event_id in event_ids(request):
            body["id"] = event_id
            response = await self.api_call(
                "POST",
                self._api(EVENTS),
                access_token=access_token,
                operation="insert event",
                json=body,
                params={"conferenceDataVersion": "1"},
                accept=(409,),
            )
            if response.status_code != 409:
                event = json_body(response)
                break
            # Our event id is derived from (switch, session): a 409 means an
            # earlier attempt already made this event, so use that one ...
            found, _ = await self._read(access_token, event_id)
            if found is not None:
                event = found
                if needs_new_conference(event):
                    event = await self._new_conference(access_token, event, request)
                break
            # ... unless it was deleted since (Google keeps deleted ids taken):
            # then the next id of the derived chain.
        else:
            raise InvalidRequestError(
                "insert event: every id derived for this session is taken by a deleted event",
                provider=self.provider,
                status=409,
            )
        event = await self._await_conference(access_token, event)
        if meet_link(event, allow_http=self._allow_http) is None:
            # Without a link the session cannot move: take the linkless event
            # back out of the tutor's calendar and say why.
            await self._delete_quietly(access_token, str(event["id"]))
            raise NoJoinLinkError(
                "Google created the calendar event without a Meet link (no conferenceData); "
                "Google Meet may be turned off for this account",
                provider=self.provider,
                code="noConferenceData",
            )
        return self._meeting(event)

    async def _new_conference(
        self, access_token: str, event: dict[str, Any], request: MeetingRequest
    ) -> dict[str, Any]:
        """events.patch with a fresh createRequest: a new conference on the same event."""
        response = await self.api_call(
            "PATCH",
            self._api(f"{EVENTS}/{event['id']}"),
            access_token=access_token,
            operation="recreate conference",
            json={
                "conferenceData": {
                    "createRequest": {
                        "requestId": next_request_id(event, request),
                        "conferenceSolutionKey": {"type": "hangoutsMeet"},
                    }
                }
            },
            params={"conferenceDataVersion": "1"},
        )
        return json_body(response)

    async def _delete_quietly(self, access_token: str, event_id: str) -> None:
        # Best effort: the caller reports the missing link either way.
        with contextlib.suppress(ProviderError):
            await self.delete_meeting(access_token, event_id)

    async def find_meeting(self, access_token: str, request: MeetingRequest) -> Meeting | None:
        """The live event of the derived id chain, once its conference is ready; None if none."""
        for event_id in event_ids(request):
            event, existed = await self._read(access_token, event_id)
            if event is not None:
                return self._meeting(await self._await_conference(access_token, event))
            if not existed:
                return None
        return None

    async def get_meeting(self, access_token: str, external_id: str) -> Meeting | None:
        """events.get; None when the event is gone or cancelled."""
        event = await self._event(access_token, external_id)
        return None if event is None else self._meeting(event)

    async def delete_meeting(self, access_token: str, external_id: str) -> bool:
        """events.delete; False when it was already deleted (404 / 410)."""
        try:
            await self.api_call(
                "DELETE",
                self._api(f"{EVENTS}/{external_id}"),
                access_token=access_token,
                operation="delete event",
            )
        except MeetingNotFoundError:
            return False
        return True

    async def _event(self, access_token: str, event_id: str) -> dict[str, Any] | None:
        return (await self._read(access_token, event_id))[0]

    async def _read(self, access_token: str, event_id: str) -> tuple[dict[str, Any] | None, bool]:
        """The live event, or None; and whether the id exists at all (deleted ones do)."""
        try:
            response = await self.api_call(
                "GET",
                self._api(f"{EVENTS}/{event_id}"),
                access_token=access_token,
                operation="get event",
            )
        except MeetingNotFoundError:
            return None, False
        event = json_body(response)
        # Deleted events can still be read, with status "cancelled".
        return (None if event.get("status") == "cancelled" else event), True

    async def _await_conference(self, access_token: str, event: dict[str, Any]) -> dict[str, Any]:
        """Poll events.get while Google is still creating the conference.

        The first re-read comes after `conference_poll_first_s`, each next one
        after twice the last wait, up to `conference_poll_interval_s`: a
        conference that is ready in a fraction of a second is seen then, not
        a whole interval later, and a slow one is not read in a tight loop.
        """
        attempts = self.settings.conference_poll_attempts
        waits = conference_poll_waits(
            first_s=self.settings.conference_poll_first_s,
            cap_s=self.settings.conference_poll_interval_s,
            attempts=attempts,
        )
        for polled in range(attempts + 1):
            status = conference_status(event)
            if status == "failure":
                raise ConferenceFailedError(
                    "Meet conference creation failed", provider=self.provider, code="failure"
                )
            if status != "pending":
                return event
            if polled == attempts:
                break
            await asyncio.sleep(waits[polled])
            fresh = await self._event(access_token, str(event["id"]))
            if fresh is None:
                raise MeetingNotFoundError(
                    "event vanished while its conference was pending", provider=self.provider
                )
            event = fresh
        raise ConferencePendingError(
            "Meet conference still pending after polling", provider=self.provider, code="pending"
        )

    def _meeting(self, event: dict[str, Any]) -> Meeting:
        start = (event.get("start") or {}).get("dateTime")
        return Meeting(
            provider=self.provider,
            external_id=str(event["id"]),
            join_url=meet_link(event, allow_http=self._allow_http),
            start_time=datetime.fromisoformat(start).astimezone(UTC) if start else None,
        )
