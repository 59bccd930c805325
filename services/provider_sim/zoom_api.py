"""Zoom's OAuth paths and the slice of its REST API v2 relink uses, under /zoom."""

from __future__ import annotations

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
        "created_at": state.now_dt().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "join_url": f"{str(request.base_url).rstrip('/')}/zoom/j/{meeting_id}",
        "settings": body.get("settings", {}),
        "tracking_fields": body.get("tracking_fields", []),
    }
    account.meetings[meeting_id] = meeting
    return JSONResponse(meeting, status_code=201)


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
