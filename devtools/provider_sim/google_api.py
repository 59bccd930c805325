"""Google's OAuth paths, userinfo and Calendar v3 events with Meet conferences, under /google."""

from __future__ import annotations

import copy
import re
import secrets
import string
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from devtools.provider_sim import oauth
from devtools.provider_sim.faults import gate, google_error, oauth_gate
from devtools.provider_sim.state import AccountState, SimState

router = APIRouter(prefix="/google")

# Calendar event ids: base32hex characters (a-v, 0-9), 5 to 1024 long (Events resource, `id`).
EVENT_ID = re.compile(r"^[a-v0-9]{5,1024}$")
EVENTS = "/calendar/v3/calendars/primary/events"

AUTH = "https://www.googleapis.com/auth"
# Scopes per endpoint. events.insert/get/patch/delete: "This request requires
# authorization with at least one of the following scopes: .../auth/calendar,
# .../auth/calendar.events" (Calendar API v3 reference, Events: insert / get /
# patch / delete, "Authorization"). The OpenID userinfo endpoint answers for
# `openid` / `email` (Google OAuth 2.0 docs, "OpenID Connect", scopes).
EVENT_SCOPES = frozenset({f"{AUTH}/calendar.events", f"{AUTH}/calendar"})
USERINFO_SCOPES = frozenset({"openid", "email", f"{AUTH}/userinfo.email"})

# start.timeZone / end.timeZone: "Formatted as an IANA Time Zone Database
# name, e.g. Europe/Zurich" (Calendar API v3 reference, Events resource).
# Google refuses anything else with 400 `invalid` "Invalid time zone
# definition for start time." (the body seen in n8n-io/n8n#2995).
KNOWN_ZONES = frozenset(available_timezones())

# Google documents no length limit for `summary` or `description` (Events
# resource). Description: ~8,192 characters is the limit integrators report
# (Nylas support, "Event Description Limits in Google Calendar and Microsoft
# Exchange"); summary: undocumented, a conservative 1,024 (relink's topics are
# far shorter). The refusal's form is undocumented too: a plain 400 `invalid`.
SUMMARY_MAX = 1024
DESCRIPTION_MAX = 8192

# conferenceSolutionKey.type: "hangoutsMeet" for Google Meet; the legacy
# "eventHangout" / "eventNamedHangout" and "addOn" need a calendar that allows
# them (Events resource, conferenceData.conferenceSolution.key.type; a
# calendar's conferenceProperties.allowedConferenceSolutionTypes). Google's
# refusal, 400 "Invalid conference type value.", is as integrators report it
# (not in the error guide). The simulated calendars allow Meet only.
CONFERENCE_TYPES = frozenset({"hangoutsMeet"})


def insufficient_scopes(needed: frozenset[str]) -> JSONResponse:
    """Google's answer to a token without the endpoint's scope (403 PERMISSION_DENIED).

    The body as Google sends it (googleapis/google-api-python-client#915,
    analogdotnow/Analog#296): the v1 `errors` list with `insufficientPermissions`
    plus the `status` and the ErrorInfo `ACCESS_TOKEN_SCOPE_INSUFFICIENT`.
    """
    body = {
        "error": {
            "code": 403,
            "message": "Request had insufficient authentication scopes.",
            "errors": [
                {
                    "message": "Insufficient Permission",
                    "domain": "global",
                    "reason": "insufficientPermissions",
                }
            ],
            "status": "PERMISSION_DENIED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                    "domain": "googleapis.com",
                    "metadata": {"service": "calendar-json.googleapis.com"},
                }
            ],
        }
    }
    challenge = (
        'Bearer realm="https://accounts.google.com/", error="insufficient_scope", '
        f'scope="{" ".join(sorted(needed))}"'
    )
    return JSONResponse(body, status_code=403, headers={"WWW-Authenticate": challenge})


async def authorized(request: Request, needed: frozenset[str]) -> AccountState | Response:
    """The account behind the bearer token if it holds one of `needed`, else Google's refusal.

    Then the injected per-minute refusals, which Google sends as 403 (Calendar
    API guide "Handle API errors": "403: User Rate Limit Exceeded" and "403:
    Rate Limit Exceeded", domain `usageLimits`, no Retry-After).
    """
    account = await gate("google", request)
    if isinstance(account, Response):
        return account
    state: SimState = request.app.state.sim
    header = request.headers.get("authorization", "")
    grant, _ = state.bearer("google", header[7:] if header[:7].lower() == "bearer " else "")
    if grant is None or not needed & set(grant.scope.split()):
        return insufficient_scopes(needed)
    if state.take_count("google", account.email, "google_user_rate_limit_403"):
        return google_error(
            403, "userRateLimitExceeded", "User Rate Limit Exceeded", domain="usageLimits"
        )
    if state.take_count("google", account.email, "google_rate_limit_403"):
        return google_error(403, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
    return account


def usage_limits_exceeded() -> JSONResponse:
    """403 `quotaExceeded` "Calendar usage limits exceeded." (Calendar API guide "Handle API
    errors"): a per-user Calendar limit against abuse, not the project's API quota; it
    says no reset time ("Avoid Calendar use limits", Google Workspace Admin Help: users
    can edit again "within several hours")."""
    return google_error(
        403, "quotaExceeded", "Calendar usage limits exceeded.", domain="usageLimits"
    )


def check_time(name: str, when: Any) -> tuple[datetime | None, JSONResponse | None]:
    """One of start / end as an aware datetime, or Google's 400 for it."""
    if not isinstance(when, dict) or not when.get("dateTime"):
        return None, google_error(400, "required", "Missing time range.")
    zone = when.get("timeZone")
    if zone is not None and zone not in KNOWN_ZONES:
        return None, google_error(400, "invalid", f"Invalid time zone definition for {name} time.")
    try:
        moment = datetime.fromisoformat(str(when["dateTime"]))
    except ValueError:
        return None, google_error(400, "invalid", f"Invalid {name} time.")
    if moment.tzinfo is None:
        # "A time zone offset is required unless a time zone is explicitly
        # specified in timeZone" (Events resource, start.dateTime).
        if zone is None:
            return None, google_error(
                400, "required", f"Missing time zone definition for {name} time."
            )
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment, None


def check_texts(body: dict[str, Any]) -> JSONResponse | None:
    """summary / description within the limits above."""
    for field, limit in (("summary", SUMMARY_MAX), ("description", DESCRIPTION_MAX)):
        value = body.get(field)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            return google_error(400, "invalid", f"Invalid value for: {field}")
    return None


@router.get("/o/oauth2/v2/auth")
async def authorize(request: Request) -> Response:
    return await oauth_gate("google", request) or await oauth.authorize_page("google", request)


@router.post("/o/oauth2/v2/auth")
async def consent(request: Request) -> Response:
    return await oauth_gate("google", request) or await oauth.authorize_decision("google", request)


@router.post("/token")
async def token(request: Request) -> Response:
    return await oauth_gate("google", request) or await oauth.token_endpoint("google", request)


@router.post("/revoke")
async def revoke(request: Request) -> Response:
    return await oauth_gate("google", request) or await oauth.revoke_endpoint("google", request)


@router.get("/oauth2/v3/userinfo")
@router.get("/oauth2/v2/userinfo")
async def userinfo(request: Request) -> Response:
    account = await authorized(request, USERINFO_SCOPES)
    if isinstance(account, Response):
        return account
    return JSONResponse(
        {"sub": account.id, "id": account.id, "email": account.email, "email_verified": True}
    )


def conference_id(rng_letters: str) -> str:
    """A Meet code shaped like the real ones: abc-defg-hij."""
    return f"{rng_letters[:3]}-{rng_letters[3:7]}-{rng_letters[7:10]}"


def render(state: SimState, account: AccountState, event_id: str, base_url: str) -> dict[str, Any]:
    """The event as the API returns it; a read of a pending conference uses up one pending read."""
    event = copy.deepcopy(account.meetings[event_id])
    conference = event.get("conferenceData")
    if not conference:
        return event
    meet_code = conference.pop("conferenceId")
    failed = conference.pop("failed", False)
    left = account.pending_reads.get(event_id, 0)
    if left > 0:
        account.pending_reads[event_id] = left - 1
        conference["createRequest"]["status"] = {"statusCode": "pending"}
        return event
    if failed:
        conference["createRequest"]["status"] = {"statusCode": "failure"}
        return event
    link = f"{base_url}/google/meet/{meet_code}"
    conference["createRequest"]["status"] = {"statusCode": "success"}
    conference["conferenceId"] = meet_code
    conference["conferenceSolution"] = {"key": {"type": "hangoutsMeet"}, "name": "Google Meet"}
    conference["entryPoints"] = [
        {"entryPointType": "video", "uri": link, "label": link.split("//")[-1]}
    ]
    event["hangoutLink"] = link
    return event


def attach_conference(
    state: SimState, account: AccountState, event: dict[str, Any], create: Any
) -> JSONResponse | None:
    """Start the Meet conference a createRequest asks for; Google's 400 for a bad request."""
    if not isinstance(create, dict) or not str(create.get("requestId") or ""):
        return google_error(400, "invalid", "Invalid conference create request.")
    kind = (create.get("conferenceSolutionKey") or {}).get("type")
    if kind not in CONFERENCE_TYPES:
        return google_error(400, "invalid", "Invalid conference type value.")
    request_id = str(create["requestId"])
    # "If an ID provided is the same as for the previous request, the request
    # is ignored" (Events resource, conferenceData.createRequest.requestId).
    current = (event.get("conferenceData") or {}).get("createRequest") or {}
    if current.get("requestId") == request_id:
        return None
    if state.take_count("google", account.email, "conference_missing"):
        # Injected: the event comes back with no conferenceData at all.
        return None
    meet_code = account.conferences.get(request_id)
    if meet_code is None:
        letters = "".join(state.rng.choice(string.ascii_lowercase) for _ in range(10))
        meet_code = account.conferences[request_id] = conference_id(letters)
    failed = bool(state.fault("google", account.email, "conference_failure")) or (
        state.take_count("google", account.email, "conference_failures")
    )
    event["conferenceData"] = {
        "createRequest": {"requestId": request_id, "conferenceSolutionKey": {"type": kind}},
        "conferenceId": meet_code,
        "failed": failed,
    }
    pending = state.fault("google", account.email, "conference_pending_reads")
    account.pending_reads[event["id"]] = (
        state.settings.google_conference_pending_reads if pending is None else pending
    )
    return None


@router.post(EVENTS)
async def insert_event(request: Request) -> Response:
    account = await authorized(request, EVENT_SCOPES)
    if isinstance(account, Response):
        return account
    state: SimState = request.app.state.sim
    try:
        body: dict[str, Any] = await request.json()
    except ValueError:
        return google_error(400, "parseError", "Parse Error")
    if not isinstance(body, dict) or "start" not in body or "end" not in body:
        return google_error(400, "required", "Missing time range.")
    start, problem = check_time("start", body["start"])
    if problem is not None:
        return problem
    end, problem = check_time("end", body["end"])
    if problem is not None:
        return problem
    assert start is not None and end is not None
    if end <= start:
        return google_error(400, "timeRangeEmpty", "The specified time range is empty.")
    problem = check_texts(body)
    if problem is not None:
        return problem
    event_id = body.get("id") or secrets.token_hex(13)
    if not EVENT_ID.match(event_id):
        return google_error(400, "invalid", "Invalid resource id value.")
    if event_id in account.meetings:
        return google_error(409, "duplicate", "The requested identifier already exists.")
    if state.take_count("google", account.email, "google_usage_limits"):
        account.create_calls += 1  # asked, and refused
        return usage_limits_exceeded()
    if not state.count_create(account):
        return usage_limits_exceeded()
    event: dict[str, Any] = {
        "kind": "calendar#event",
        "id": event_id,
        "status": "confirmed",
        "summary": body.get("summary", ""),
        "start": body["start"],
        "end": body["end"],
        "created": state.now_dt().isoformat(),
        "organizer": {"email": account.email, "self": True},
        "htmlLink": f"{str(request.base_url).rstrip('/')}/google/calendar/event?eid={event_id}",
    }
    if "description" in body:
        event["description"] = body["description"]
    # conferenceDataVersion 0 (the default) ignores conferenceData in the body
    # (Events: insert, parameter conferenceDataVersion).
    create = (body.get("conferenceData") or {}).get("createRequest")
    if request.query_params.get("conferenceDataVersion") == "1" and create is not None:
        problem = attach_conference(state, account, event, create)
        if problem is not None:
            return problem
    account.meetings[event_id] = event
    return JSONResponse(render(state, account, event_id, str(request.base_url).rstrip("/")))


@router.patch(EVENTS + "/{event_id}")
async def patch_event(event_id: str, request: Request) -> Response:
    """events.patch: summary / description, and a new conference from a new createRequest.

    A failed conference is retried by patching the event with a createRequest
    under a new requestId and conferenceDataVersion=1 (Events: patch; Events
    resource, conferenceData.createRequest).
    """
    account = await authorized(request, EVENT_SCOPES)
    if isinstance(account, Response):
        return account
    state: SimState = request.app.state.sim
    event = account.meetings.get(event_id)
    if event is None:
        return google_error(404, "notFound", "Not Found")
    try:
        body: dict[str, Any] = await request.json()
    except ValueError:
        return google_error(400, "parseError", "Parse Error")
    if not isinstance(body, dict):
        return google_error(400, "parseError", "Parse Error")
    problem = check_texts(body)
    if problem is not None:
        return problem
    create = (body.get("conferenceData") or {}).get("createRequest")
    if request.query_params.get("conferenceDataVersion") == "1" and create is not None:
        problem = attach_conference(state, account, event, create)
        if problem is not None:
            return problem
    for field in ("summary", "description"):
        if field in body:
            event[field] = body[field]
    return JSONResponse(render(state, account, event_id, str(request.base_url).rstrip("/")))


@router.get(EVENTS + "/{event_id}")
async def get_event(event_id: str, request: Request) -> Response:
    account = await authorized(request, EVENT_SCOPES)
    if isinstance(account, Response):
        return account
    if event_id not in account.meetings:
        return google_error(404, "notFound", "Not Found")
    state: SimState = request.app.state.sim
    return JSONResponse(render(state, account, event_id, str(request.base_url).rstrip("/")))


@router.delete(EVENTS + "/{event_id}")
async def delete_event(event_id: str, request: Request) -> Response:
    account = await authorized(request, EVENT_SCOPES)
    if isinstance(account, Response):
        return account
    event = account.meetings.get(event_id)
    if event is None:
        return google_error(404, "notFound", "Not Found")
    if event["status"] == "cancelled":
        return google_error(410, "deleted", "Resource has been deleted")
    # Deleted events stay readable with status "cancelled", as at Google.
    event["status"] = "cancelled"
    return Response(status_code=204)


@router.get("/meet/{meet_code}")
async def meet_page(meet_code: str, request: Request) -> Response:
    state: SimState = request.app.state.sim
    for account in state.accounts.values():
        for event in account.meetings.values():
            conference = event.get("conferenceData") or {}
            # A failed conference has no meeting to join.
            if (
                conference.get("conferenceId") == meet_code
                and not conference.get("failed")
                and event["status"] != "cancelled"
            ):
                return HTMLResponse(f"<h1>Google Meet {meet_code} (simulated)</h1>")
    return HTMLResponse("<h1>Check your meeting code</h1>", status_code=404)
