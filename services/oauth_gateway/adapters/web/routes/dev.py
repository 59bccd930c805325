"""The dev-only sign-in page: pick a demo user, get a platform token cookie.

Present only when RELINK_DEV_MODE is on; otherwise every path here is a 404.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from services.oauth_gateway.adapters.web.auth import issue_token
from services.oauth_gateway.adapters.web.deps import GatewayDep, render
from services.oauth_gateway.errors import NotFound

router = APIRouter(prefix="/dev", tags=["dev"], include_in_schema=False)


def _require_dev(gateway: GatewayDep) -> None:
    if not gateway.settings.dev_mode:
        raise NotFound("not found")


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request, gateway: GatewayDep) -> HTMLResponse:
    """Every user, with a button to sign in as them."""
    _require_dev(gateway)
    users = await gateway.users()
    return render(request, "sign_in.html", {"users": users})


@router.post("/sign-in")
async def sign_in(user_id: Annotated[uuid.UUID, Form()], gateway: GatewayDep) -> RedirectResponse:
    """Set the session cookie for a user and go to their page."""
    _require_dev(gateway)
    user = await gateway.user(user_id)
    if user is None or user.role not in ("tutor", "student"):
        raise NotFound("no such user")
    settings = gateway.settings
    token = issue_token(
        user.id,
        role="tutor" if user.role == "tutor" else "student",
        secret=settings.session_secret.get_secret_value(),
        ttl_s=settings.session_ttl_s,
    )
    target = "/tutor/video-setup" if user.role == "tutor" else "/student/sessions"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        settings.session_cookie,
        token,
        max_age=settings.session_ttl_s,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )
    return response


@router.post("/sign-out")
async def sign_out(gateway: GatewayDep) -> RedirectResponse:
    _require_dev(gateway)
    response = RedirectResponse("/dev/sign-in", status_code=303)
    response.delete_cookie(gateway.settings.session_cookie)
    return response
