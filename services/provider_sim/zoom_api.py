"""Zoom's OAuth paths and the slice of its REST API v2 relink uses, under /zoom."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from services.provider_sim import oauth
from services.provider_sim.faults import gate, oauth_gate, zoom_error
from services.provider_sim.state import SimState

router = APIRouter(prefix="/zoom")


@router.get("/oauth/authorize")
async def authorize(request: Request) -> Response:
    return await oauth_gate("zoom", request) or await oauth.authorize_page("zoom", request)


@router.post("/oauth/authorize")
async def consent(request: Request) -> Response:
    return await oauth_gate("zoom", request) or await oauth.authorize_decision("zoom", request)


@router.post("/oauth/token")
async def token(request: Request) -> Response:
    return await oauth_gate("zoom", request) or await oauth.token_endpoint("zoom", request)


@router.post("/oauth/revoke")
async def revoke(request: Request) -> Response:
    return await oauth_gate("zoom", request) or await oauth.revoke_endpoint("zoom", request)


@router.get("/v2/users/me")
async def me(request: Request) -> Response:
    account = await gate("zoom", request)
    if isinstance(account, Response):
        return account
    return JSONResponse({"id": account.id, "email": account.email, "type": 2, "status": "active"})


@router.post("/v2/users/me/meetings")
async def create_meeting(request: Request) -> Response:
    # Take the body before the injected latency, as Zoom has it once sent: a
    # client that dies while we "work" must not undo the create (the lost
    # answer a retry has to find), and Starlette refuses a body read after
    # the disconnect.
    await request.body()
    account = await gate("zoom", request)
    if isinstance(account, Response):
        return account
    state: SimState = request.app.state.sim
    try:
        body: dict[str, Any] = await request.json()
    except ValueError:
        return zoom_error(400, 300, "Request Body should be a valid JSON object.")
    if not isinstance(body, dict) or (not body.get("start_time") and body.get("type") == 2):
        return zoom_error(400, 300, "Validation Failed.")
    duration = body.get("duration", 60)
    if not isinstance(duration, int) or duration < 1:
        return zoom_error(400, 300, "Validation Failed.")
    if not state.count_create(account):
        cap = (
            state.fault("zoom", account.email, "daily_quota")
            or state.settings.zoom_daily_meeting_cap
        )
        # Zoom's real daily-cap answer: no Retry-After, the reset only in the text.
        return zoom_error(
            429,
            429,
            f"You have exceeded the daily rate limit ({cap}) of Meeting Create/Update API requests "
            "permitted for this particular user. You may resume these requests at GMT 00:00:00.",
        )
    meeting_id = state.new_zoom_id()
    meeting = {
        "id": int(meeting_id),
        "uuid": meeting_id,
        "host_id": account.id,
        "host_email": account.email,
        "topic": body.get("topic", "Zoom meeting"),
        "type": body.get("type", 2),
        "status": "waiting",
        "start_time": body.get("start_time"),
        "duration": body.get("duration", 60),
        "timezone": body.get("timezone", "UTC"),
        "agenda": str(body.get("agenda") or ""),
        "created_at": state.now_dt().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "join_url": f"{str(request.base_url).rstrip('/')}/zoom/j/{meeting_id}",
        "settings": body.get("settings", {}),
        "tracking_fields": body.get("tracking_fields", []),
    }
    account.meetings[meeting_id] = meeting
    return JSONResponse(meeting, status_code=201)


# What "List meetings" returns of each meeting (Zoom API: List meetings, 200 body).
LISTED_FIELDS = (
    "uuid", "id", "host_id", "topic", "type", "start_time", "duration", "timezone",
    "agenda", "created_at", "join_url",
)  # fmt: skip
LIST_TYPES = frozenset({"scheduled", "live", "upcoming", "upcoming_meetings", "previous_meetings"})


def _list_key(meeting: dict[str, Any]) -> str:
    """A meeting's place in the list: start time, then id (both fixed width)."""
    return f"{meeting.get('start_time') or ''}|{meeting['id']:020d}"


def _listed(meeting: dict[str, Any], *, kind: str, now: float) -> bool:
    if kind == "scheduled":
        return True
    if kind == "live":
        return meeting.get("status") == "started"
    start = meeting.get("start_time")
    ends = (
        datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()
        + 60 * int(meeting.get("duration") or 0)
        if start
        else now
    )
    return ends < now if kind == "previous_meetings" else ends >= now


@router.get("/v2/users/me/meetings")
async def list_meetings(request: Request) -> Response:
    """One page of the user's meetings, `next_page_token` for the rest ("" on the last page)."""
    account = await gate("zoom", request)
    if isinstance(account, Response):
        return account
    state: SimState = request.app.state.sim
    query = request.query_params
    kind = query.get("type", "scheduled")
    try:
        # Zoom: default 30, at most 300 records a page.
        page_size = min(max(int(query.get("page_size", "30")), 1), 300)
        after = (
            base64.urlsafe_b64decode(query["next_page_token"]).decode()
            if query.get("next_page_token")
            else ""
        )
    except (ValueError, UnicodeDecodeError):
        return zoom_error(400, 300, "Invalid field.")
    if kind not in LIST_TYPES:
        return zoom_error(400, 300, "Invalid field.")
    # Keyset pages (after the last key sent), so deleting a meeting between
    # pages skips nothing.
    now = state.now()
    matching = sorted(
        (m for m in account.meetings.values() if _listed(m, kind=kind, now=now)), key=_list_key
    )
    rest = [m for m in matching if _list_key(m) > after]
    page = rest[:page_size]
    more = len(rest) > page_size
    token = base64.urlsafe_b64encode(_list_key(page[-1]).encode()).decode() if more else ""
    return JSONResponse(
        {
            "next_page_token": token,
            "page_size": page_size,
            "total_records": len(matching),
            "meetings": [{k: m[k] for k in LISTED_FIELDS if k in m} for m in page],
        }
    )


@router.get("/v2/meetings/{meeting_id}")
async def get_meeting(meeting_id: str, request: Request) -> Response:
    account = await gate("zoom", request)
    if isinstance(account, Response):
        return account
    meeting = account.meetings.get(meeting_id)
    if meeting is None:
        return zoom_error(404, 3001, f"Meeting does not exist: {meeting_id}.")
    return JSONResponse(meeting)


@router.delete("/v2/meetings/{meeting_id}")
async def delete_meeting(meeting_id: str, request: Request) -> Response:
    account = await gate("zoom", request)
    if isinstance(account, Response):
        return account
    if account.meetings.pop(meeting_id, None) is None:
        return zoom_error(404, 3001, f"Meeting does not exist: {meeting_id}.")
    return Response(status_code=204)


@router.get("/j/{meeting_id}")
async def join_page(meeting_id: str, request: Request) -> Response:
    state: SimState = request.app.state.sim
    for account in state.accounts.values():
        if account.provider == "zoom" and meeting_id in account.meetings:
            return HTMLResponse(f"<h1>Zoom meeting {meeting_id} (simulated)</h1>")
    return HTMLResponse("<h1>This meeting does not exist</h1>", status_code=404)
