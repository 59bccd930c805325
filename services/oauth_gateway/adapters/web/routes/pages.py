"""Server-rendered pages: the tutor's video setup, the student's sessions."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from services.oauth_gateway.adapters.web.auth import csrf_token
from services.oauth_gateway.adapters.web.deps import (
    CsrfChecked,
    CurrentStudent,
    CurrentTutor,
    GatewayDep,
    render,
    session_token,
)
from services.oauth_gateway.adapters.web.views import message_view
from services.oauth_gateway.domain import PROVIDER_LABELS, notice_applies

router = APIRouter(tags=["pages"], include_in_schema=False)

Token = Annotated[tuple[str, bool] | None, Depends(session_token)]


def _csrf(token: tuple[str, bool] | None, gateway: GatewayDep) -> str:
    secret = gateway.settings.session_secret.get_secret_value()
    return csrf_token(token[0], secret=secret) if token else ""


@router.get("/", response_class=RedirectResponse)
async def home() -> RedirectResponse:
    return RedirectResponse("/tutor/video-setup", status_code=302)


@router.get("/tutor/video-setup", response_class=HTMLResponse)
async def video_setup(
    request: Request,
    tutor: CurrentTutor,
    gateway: GatewayDep,
    token: Token,
    success: bool = False,
    switch: uuid.UUID | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    """Current provider, switch buttons, the brief's messages, live progress, history."""
    connection = await gateway.connection(tutor)
    history = await gateway.history(tutor)
    user = await gateway.user(tutor.user_id)
    shown = None
    if switch is not None:
        shown = await gateway.switch(tutor, switch)
    elif history:
        shown = await gateway.switch(tutor, history[0].id)
    message = None
    if success:
        message = message_view(shown.progress if switch is not None and shown else None)
    elif shown is not None and (shown.watched or notice):
        message = message_view(shown.progress)
    # A notice describes what the button started; once that ended (the page
    # reloads with the same address) the switch's own message says how it ended.
    if not notice_applies(notice, shown.state if shown else None):
        notice = None
    sessions = await gateway.upcoming_for(tutor)
    deleted = await gateway.deleted_meetings(tutor)
    context: dict[str, Any] = {
        "deleted_meetings": deleted,
        "tutor": user,
        "connection": connection,
        "labels": PROVIDER_LABELS,
        "providers": list(gateway.clients),
        "switch": shown,
        "message": message,
        "history": history,
        "sessions": sessions[:20],
        # Upcoming sessions whose meetings are at the connected provider (what a
        # disconnected connection strands: relink can no longer act on them).
        "stranded": sum(1 for x in sessions if connection and x.provider == connection.provider),
        "csrf_token": _csrf(token, gateway),
        "poll_ms": gateway.settings.progress_poll_ms,
        "notice": notice,
    }
    return render(request, "video_setup.html", context)


@router.post("/tutor/switches/{switch_id}/retry", dependencies=[CsrfChecked])
async def retry_failed(
    switch_id: uuid.UUID, tutor: CurrentTutor, gateway: GatewayDep
) -> RedirectResponse:
    """The "Retry failed" button: record the request, back to the page."""
    await gateway.request_retry(tutor, switch_id)
    return RedirectResponse(
        f"/tutor/video-setup?switch={switch_id}&notice=retry_requested", status_code=303
    )


@router.post("/tutor/switches/{switch_id}/rollback", dependencies=[CsrfChecked])
async def roll_back(
    switch_id: uuid.UUID, tutor: CurrentTutor, gateway: GatewayDep
) -> RedirectResponse:
    """The "Roll back" button: previous provider active again, old meetings restored."""
    await gateway.request_rollback(tutor, switch_id)
    return RedirectResponse(
        f"/tutor/video-setup?switch={switch_id}&notice=rollback_requested", status_code=303
    )


@router.post("/tutor/sessions/{session_id}/recreate-meeting", dependencies=[CsrfChecked])
async def recreate_meeting(
    session_id: uuid.UUID, tutor: CurrentTutor, gateway: GatewayDep
) -> RedirectResponse:
    """The "Re-create meeting" button of a session whose meeting was deleted at the provider."""
    await gateway.recreate_meeting(tutor, session_id)
    return RedirectResponse("/tutor/video-setup?notice=meeting_recreated", status_code=303)


@router.get("/student/sessions", response_class=HTMLResponse)
async def student_sessions(
    request: Request, student: CurrentStudent, gateway: GatewayDep
) -> HTMLResponse:
    """The student's upcoming sessions and their current join links."""
    user = await gateway.user(student.user_id)
    sessions = await gateway.upcoming_for(student)
    return render(
        request,
        "student_sessions.html",
        {"student": user, "sessions": sessions, "labels": PROVIDER_LABELS},
    )
