"""Google's OAuth paths, userinfo and Calendar v3 events with Meet conferences, under /google."""

from __future__ import annotations

import copy
import re
import secrets
import string
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from services.provider_sim import oauth
from services.provider_sim.faults import gate, google_error, oauth_gate
from services.provider_sim.state import AccountState, SimState

router = APIRouter(prefix="/google")

# Calendar event ids: base32hex characters (a-v, 0-9), 5 to 1024 long (Events resource, `id`).
EVENT_ID = re.compile(r"^[a-v0-9]{5,1024}$")
EVENTS = "/calendar/v3/calendars/primary/events"


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
    account = await gate("google", request)
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


@router.post(EVENTS)
async def insert_event(request: Request) -> Response:
    account = await gate("google", request)
    if isinstance(account, Response):
        return account
    state: SimState = request.app.state.sim
    try:
        body: dict[str, Any] = await request.json()
    except ValueError:
        return google_error(400, "parseError", "Parse Error")
    if not isinstance(body, dict) or "start" not in body or "end" not in body:
        return google_error(400, "required", "Missing time range.")
    start, end = body["start"].get("dateTime", ""), body["end"].get("dateTime", "")
    try:
        empty = datetime.fromisoformat(end) <= datetime.fromisoformat(start)
    except ValueError:
        return google_error(400, "invalid", "Invalid start or end time.")
    if empty:
        return google_error(400, "timeRangeEmpty", "The specified time range is empty.")
    event_id = body.get("id") or secrets.token_hex(13)
    if not EVENT_ID.match(event_id):
        return google_error(400, "invalid", "Invalid resource id value.")
    if event_id in account.meetings:
        return google_error(409, "duplicate", "The requested identifier already exists.")
    if not state.count_create(account):
        return google_error(
            403, "quotaExceeded", "Calendar usage limits exceeded.", domain="usageLimits"
        )
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
    create = (body.get("conferenceData") or {}).get("createRequest")
    if request.query_params.get("conferenceDataVersion") == "1" and create:
        request_id = str(create.get("requestId", ""))
        if not request_id:
            return google_error(400, "invalid", "Invalid conference create request.")
        # A repeated requestId makes no second conference: it gets the first one.
        meet_code = account.conferences.get(request_id)
        if meet_code is None:
            letters = "".join(state.rng.choice(string.ascii_lowercase) for _ in range(10))
            meet_code = account.conferences[request_id] = conference_id(letters)
        event["conferenceData"] = {
            "createRequest": {
                "requestId": request_id,
                "conferenceSolutionKey": {"type": "hangoutsMeet"},
            },
            "conferenceId": meet_code,
            "failed": bool(state.fault("google", account.email, "conference_failure")),
        }
        pending = state.fault("google", account.email, "conference_pending_reads")
        account.pending_reads[event_id] = (
            state.settings.google_conference_pending_reads if pending is None else pending
        )
    account.meetings[event_id] = event
    return JSONResponse(render(state, account, event_id, str(request.base_url).rstrip("/")))


@router.get(EVENTS + "/{event_id}")
async def get_event(event_id: str, request: Request) -> Response:
    account = await gate("google", request)
    if isinstance(account, Response):
        return account
    if event_id not in account.meetings:
        return google_error(404, "notFound", "Not Found")
    state: SimState = request.app.state.sim
    return JSONResponse(render(state, account, event_id, str(request.base_url).rstrip("/")))


@router.delete(EVENTS + "/{event_id}")
async def delete_event(event_id: str, request: Request) -> Response:
    account = await gate("google", request)
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
            if conference.get("conferenceId") == meet_code and event["status"] != "cancelled":
                return HTMLResponse(f"<h1>Google Meet {meet_code} (simulated)</h1>")
    return HTMLResponse("<h1>Check your meeting code</h1>", status_code=404)
