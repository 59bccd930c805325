"""Event notifications from the providers: Zoom's event subscriptions, Google's push channels.

A Zoom notification is verified (signed with our secret token, recent) and
parsed into its typed event here, at the boundary; the use case it names is
then called with that event's fields.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.oauth_gateway.adapters.web.deps import GatewayDep
from services.oauth_gateway.adapters.web.openapi import ALWAYS, answers
from services.oauth_gateway.adapters.web.zoom_events import (
    Deauthorized,
    MeetingDeleted,
    UrlValidation,
    notification_id,
    parse,
    url_validation_answer,
    verify,
)
from services.oauth_gateway.errors import NotificationRefused
from services.oauth_gateway.usecases.tutors import Gateway

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

# Malformed bodies are 400; anything not provably from Zoom (or too old) is
# 401; an endpoint without a secret token cannot verify anything: 503.
STATUS = {"malformed": 400, "not_configured": 503}


@router.post("/zoom", responses=answers(400, 401, *ALWAYS))
async def zoom_events(request: Request, gateway: GatewayDep) -> JSONResponse:
    """Zoom's event notification endpoint: URL validation, app_deauthorized, meeting.deleted."""
    # The signature covers the raw bytes: read them before any JSON parsing.
    body = await request.body()
    try:
        answer = await _zoom_notification(
            gateway,
            body=body,
            timestamp=request.headers.get("x-zm-request-timestamp"),
            signature=request.headers.get("x-zm-signature"),
        )
    except NotificationRefused as exc:
        gateway.metrics.webhook(provider="zoom", outcome=exc.reason)
        return JSONResponse(
            {"error": exc.reason, "detail": str(exc)}, status_code=STATUS.get(exc.reason, 401)
        )
    gateway.metrics.webhook(provider="zoom", outcome=answer.get("status", "url_validation"))
    return JSONResponse(answer)


async def _zoom_notification(
    gateway: Gateway, *, body: bytes, timestamp: str | None, signature: str | None
) -> dict[str, str]:
    """Verify and act on one Zoom event notification; the JSON to answer with.

    Raises `NotificationRefused` for anything not signed by Zoom with our
    secret token, or too old: nothing is changed then.
    """
    secret = gateway.settings.zoom_webhook_secret_token.get_secret_value()
    if not secret:
        raise NotificationRefused(
            "RELINK_ZOOM_WEBHOOK_SECRET_TOKEN is not set", reason="not_configured"
        )
    now = gateway.clock()
    verify(
        secret,
        timestamp=timestamp,
        given=signature,
        body=body,
        now=now,
        max_skew_s=gateway.settings.webhook_max_skew_s,
    )
    notification = parse(body, now=now)
    nid = notification_id(body)
    if isinstance(notification, UrlValidation):
        return url_validation_answer(secret, notification.plain_token)
    if isinstance(notification, Deauthorized):
        return await gateway.zoom_app_removed(
            notification_id=nid,
            zoom_user_id=notification.user_id,
            deauthorized_at=notification.deauthorized_at,
        )
    if isinstance(notification, MeetingDeleted):
        return await gateway.zoom_meeting_deleted(
            notification_id=nid,
            meeting_id=notification.meeting_id,
            deleted_at=notification.deleted_at,
        )
    return {"status": "ignored"}


@router.post("/google", responses=answers(400, 401, *ALWAYS))
async def google_events(request: Request, gateway: GatewayDep) -> JSONResponse:
    """Google Calendar push notifications (events.watch channels): headers only, no body."""
    headers = request.headers
    try:
        answer = await gateway.google_notification(
            channel_id=headers.get("x-goog-channel-id"),
            token=headers.get("x-goog-channel-token"),
            resource_id=headers.get("x-goog-resource-id"),
            resource_state=headers.get("x-goog-resource-state"),
            message_number=headers.get("x-goog-message-number"),
        )
    except NotificationRefused as exc:
        gateway.metrics.webhook(provider="google_meet", outcome=exc.reason)
        return JSONResponse(
            {"error": exc.reason, "detail": str(exc)}, status_code=STATUS.get(exc.reason, 401)
        )
    gateway.metrics.webhook(provider="google_meet", outcome=answer["status"])
    return JSONResponse(answer)
