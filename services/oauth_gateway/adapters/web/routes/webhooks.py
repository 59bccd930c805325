"""Event notifications from the providers: Zoom's event subscriptions, Google's push channels."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.oauth_gateway.adapters.web.deps import GatewayDep
from services.oauth_gateway.errors import NotificationRefused

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

# Malformed bodies are 400; anything not provably from Zoom (or too old) is
# 401; an endpoint without a secret token cannot verify anything: 503.
STATUS = {"malformed": 400, "not_configured": 503}


@router.post("/zoom")
async def zoom_events(request: Request, gateway: GatewayDep) -> JSONResponse:
    """Zoom's event notification endpoint: URL validation, app_deauthorized, meeting.deleted."""
    # The signature covers the raw bytes: read them before any JSON parsing.
    body = await request.body()
    try:
        answer = await gateway.zoom_notification(
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


@router.post("/google")
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
