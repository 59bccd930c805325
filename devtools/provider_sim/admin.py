"""The admin API tests drive: state per account, the clock, faults, reset. Not a provider path."""

from __future__ import annotations

import html
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from devtools.provider_sim.state import Faults, Provider, SimState

router = APIRouter(prefix="/_admin")


class Advance(BaseModel):
    """How far to move the simulated clock."""

    seconds: float


def sim(request: Request) -> SimState:
    state: SimState = request.app.state.sim
    return state


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/reset")
async def reset(request: Request) -> dict[str, str]:
    sim(request).reset()
    return {"status": "reset"}


@router.get("/clock")
async def clock(request: Request) -> dict[str, Any]:
    state = sim(request)
    return {"now": state.now_dt().isoformat(), "offset_s": state.clock_offset_s}


@router.post("/clock/advance")
async def advance(body: Advance, request: Request) -> dict[str, Any]:
    state = sim(request)
    state.advance(body.seconds)
    return {"now": state.now_dt().isoformat(), "offset_s": state.clock_offset_s}


@router.put("/faults/{provider}")
async def provider_faults(provider: Provider, faults: Faults, request: Request) -> Faults:
    sim(request).set_faults(provider, faults)
    return faults


@router.put("/faults/{provider}/{email}")
async def account_faults(
    provider: Provider, email: str, faults: Faults, request: Request
) -> Faults:
    sim(request).set_faults(provider, faults, email=email.lower())
    return faults


@router.delete("/faults/{provider}")
async def clear_provider_faults(provider: Provider, request: Request) -> dict[str, str]:
    sim(request).clear_faults(provider)
    return {"status": "cleared"}


@router.delete("/faults/{provider}/{email}")
async def clear_account_faults(provider: Provider, email: str, request: Request) -> dict[str, str]:
    sim(request).clear_faults(provider, email=email.lower())
    return {"status": "cleared"}


@router.get("/accounts/{provider}/{email}")
async def account(provider: Provider, email: str, request: Request) -> dict[str, Any]:
    return sim(request).snapshot(provider, email)


@router.post("/accounts/{provider}/{email}/revoke")
async def revoke_account(provider: Provider, email: str, request: Request) -> dict[str, int]:
    return {"revoked_grants": sim(request).revoke_account(provider, email)}


class TrackingFields(BaseModel):
    """The tracking fields a Zoom account's admin defined (none by default)."""

    fields: list[str]


@router.put("/accounts/zoom/{email}/tracking-fields")
async def zoom_tracking_fields(
    email: str, body: TrackingFields, request: Request
) -> dict[str, list[str]]:
    """Define the account's tracking fields: only these may ride on a created meeting."""
    account = sim(request).account("zoom", email)
    account.tracking_fields = set(body.fields)
    return {"fields": sorted(account.tracking_fields)}


@router.post("/accounts/{provider}/{email}/expire-tokens")
async def expire_tokens(provider: Provider, email: str, request: Request) -> dict[str, int]:
    return {"expired_tokens": sim(request).expire_tokens(provider, email)}


def _meet_link(event: dict[str, Any], base: str) -> str | None:
    """The Meet link an event's conference has (the API renders it the same way)."""
    conference_id = (event.get("conferenceData") or {}).get("conferenceId")
    return f"{base}/google/meet/{conference_id}" if conference_id else None


@router.get("/issued-tokens")
async def issued_tokens(request: Request) -> dict[str, list[str]]:
    """Every token the simulator issued: what a leak check searches logs and topics for.

    A stand-in's test hook: the real providers have nothing like it.
    """
    return {"tokens": list(sim(request).issued_tokens)}


@router.get("/meetings", response_model=None)
async def meetings(request: Request) -> dict[str, Any] | HTMLResponse:
    """Every account's live meetings: JSON for programs, an HTML page for people."""
    state = sim(request)
    accounts = [state.snapshot(provider, email) for (provider, email) in sorted(state.accounts)]
    if "text/html" not in request.headers.get("accept", ""):
        return {"accounts": accounts}
    base = str(request.base_url).rstrip("/")
    rows = []
    for acct in accounts:
        for meeting in acct["meetings"]:
            start = meeting.get("start_time") or (meeting.get("start") or {}).get("dateTime", "")
            title = meeting.get("topic") or meeting.get("summary") or ""
            link = meeting.get("join_url") or _meet_link(meeting, base) or ""
            rows.append(
                "<tr>"
                + "".join(
                    f"<td>{html.escape(str(v))}</td>"
                    for v in (acct["provider"], acct["email"], meeting.get("id", ""), title, start)
                )
                + f'<td><a href="{html.escape(link)}">{html.escape(link)}</a></td></tr>'
            )
    body = "".join(rows) or '<tr><td colspan="6">no meetings yet</td></tr>'
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Simulator meetings</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;"
        "border-bottom:1px solid #ddd;text-align:left}</style></head><body>"
        f"<h1>Provider simulator: {sum(len(a['meetings']) for a in accounts)} live meetings</h1>"
        "<table><tr><th>provider</th><th>account</th><th>id</th><th>topic</th><th>start</th>"
        f"<th>join link</th></tr>{body}</table></body></html>"
    )
    return HTMLResponse(page)
