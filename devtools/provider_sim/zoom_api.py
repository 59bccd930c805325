"""Zoom's OAuth paths and the slice of its REST API v2 relink uses, under /zoom."""

from __future__ import annotations

import base64
import zoneinfo
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from devtools.provider_sim import oauth
from devtools.provider_sim.faults import gate, oauth_gate, zoom_error
from devtools.provider_sim.state import AccountState, SimState

router = APIRouter(prefix="/zoom")

# Granular scopes per endpoint, as the Zoom API reference lists them for a
# General (user-managed) app: "Create a meeting" meeting:write:meeting, "Get a
# meeting" meeting:read:meeting, "List meetings" meeting:read:list_meetings,
# "Delete a meeting" meeting:delete:meeting, "Get a user" user:read:user. The
# `:admin` variant (account-level) covers the same call.
SCOPE_CREATE = "meeting:write:meeting"
SCOPE_GET = "meeting:read:meeting"
SCOPE_LIST = "meeting:read:list_meetings"
SCOPE_DELETE = "meeting:delete:meeting"
SCOPE_USER = "user:read:user"

# Create-a-meeting request limits (Zoom API reference, "Create a meeting"):
# topic up to 200 characters, agenda up to 2,000.
TOPIC_MAX = 200
AGENDA_MAX = 2000
# "List meetings" returns the agenda cut to its first 250 characters (Zoom API
# reference, "List meetings", `meetings[].agenda`).
LISTED_AGENDA_MAX = 250
KNOWN_TIMEZONES = frozenset(zoneinfo.available_timezones())


async def scoped(request: Request, scope: str) -> AccountState | Response:
    """The caller's account, or Zoom's answer when the token is bad or lacks `scope`.

    A live token without the endpoint's scope gets HTTP 400 with code 4711 and
    the scope named (Zoom API reference, "Error codes": 4700/4711 "Invalid
    access token, does not contain scopes"; the body as Zoom sends it, e.g.
    `{"code":4711,"message":"Invalid access token, does not contain
    scopes:[user:read:list_users:admin]."}`). Checked before the injected
    faults, as Zoom refuses the token before it does any work.
    """
    state: SimState = request.app.state.sim
    header = request.headers.get("authorization", "")
    grant, _ = state.bearer("zoom", header[7:] if header[:7].lower() == "bearer " else "")
    if (
        grant is not None
        and not state.fault("zoom", None, "down")
        and not grant.has_scope(scope, f"{scope}:admin")
    ):
        return zoom_error(400, 4711, f"Invalid access token, does not contain scopes:[{scope}].")
    return await gate("zoom", request)


def validation_failed(*fields: str) -> Response:
    """Zoom's answer to invalid fields: code 300 "Validation Failed." with the fields named.

    Zoom API reference, "Error codes": `{"code": 300, "message": "Validation
    Failed.", "errors": [{"field": ..., "message": "Invalid field."}]}`.
    """
    return JSONResponse(
        {
            "code": 300,
            "message": "Validation Failed.",
            "errors": [{"field": name, "message": "Invalid field."} for name in fields],
        },
        status_code=400,
    )


def parse_start_time(value: object) -> datetime | None:
    """A start_time in Zoom's GMT (yyyy-MM-ddTHH:mm:ssZ) or local (no Z) form.

    Zoom API reference, "Create a meeting", `start_time`.
    """
    if not isinstance(value, str):
        return None
    for form in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value, form)
        except ValueError:
            continue
    return None


def invalid_fields(body: dict[str, Any], account: AccountState) -> list[str]:
    """The create request's fields Zoom would refuse, by the rules cited beside each."""
    bad: list[str] = []
    topic = body.get("topic", "")
    if not isinstance(topic, str) or len(topic) > TOPIC_MAX:
        bad.append("topic")
    agenda = body.get("agenda", "")
    if not isinstance(agenda, str) or len(agenda) > AGENDA_MAX:
        bad.append("agenda")
    # `timezone`: an ID from Zoom's time zone list (Zoom API reference, "Create
    # a meeting" and "Timezones"); the IANA names stand in for that list.
    if "timezone" in body and body["timezone"] not in KNOWN_TIMEZONES:
        bad.append("timezone")
    # A scheduled meeting (type 2) needs a start_time in one of the two forms.
    if body.get("type", 2) == 2 and parse_start_time(body.get("start_time")) is None:
        bad.append("start_time")
    # `tracking_fields[].field` must name a tracking field the account defined
    # (Zoom API reference, "Create a meeting" and "Tracking fields").
    tracking = body.get("tracking_fields", [])
    if not isinstance(tracking, list) or any(
        not isinstance(item, dict) or item.get("field") not in account.tracking_fields
        for item in tracking
    ):
        bad.append("tracking_fields")
    return bad


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
    account = await scoped(request, SCOPE_USER)
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
    account = await scoped(request, SCOPE_CREATE)
    if isinstance(account, Response):
        return account
    state: SimState = request.app.state.sim
    try:
        body: dict[str, Any] = await request.json()
    except ValueError:
        return zoom_error(400, 300, "Request Body should be a valid JSON object.")
    if not isinstance(body, dict):
        return zoom_error(400, 300, "Request Body should be a valid JSON object.")
    bad = invalid_fields(body, account)
    duration = body.get("duration", 60)
    if not isinstance(duration, int) or duration < 1:
        bad.append("duration")
    if bad:
        # Refused before the daily create count: nothing was made.
        return validation_failed(*bad)
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


def listed(meeting: dict[str, Any]) -> dict[str, Any]:
    """A meeting as "List meetings" shows it: fewer fields, the agenda cut to 250 characters."""
    item = {k: meeting[k] for k in LISTED_FIELDS if k in meeting}
    if "agenda" in item:
        item["agenda"] = str(item["agenda"])[:LISTED_AGENDA_MAX]
    return item


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
    account = await scoped(request, SCOPE_LIST)
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
            "meetings": [listed(m) for m in page],
        }
    )


@router.get("/v2/meetings/{meeting_id}")
async def get_meeting(meeting_id: str, request: Request) -> Response:
    account = await scoped(request, SCOPE_GET)
    if isinstance(account, Response):
        return account
    meeting = account.meetings.get(meeting_id)
    if meeting is None:
        return zoom_error(404, 3001, f"Meeting does not exist: {meeting_id}.")
    return JSONResponse(meeting)


@router.delete("/v2/meetings/{meeting_id}")
async def delete_meeting(meeting_id: str, request: Request) -> Response:
    account = await scoped(request, SCOPE_DELETE)
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
