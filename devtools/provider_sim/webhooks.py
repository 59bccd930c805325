"""Zoom's event notifications, sent by the simulator when the account acts at "Zoom" itself.

What a real Zoom does, and this module imitates (Zoom "Using webhooks",
developers.zoom.us/docs/api/webhooks/):

- It POSTs JSON `{"event": ..., "event_ts": <epoch ms>, "payload": {...}}` to
  the app's event notification endpoint, with `x-zm-request-timestamp`
  (epoch ms) and `x-zm-signature: v0=HMAC-SHA256(secret token,
  "v0:{timestamp}:{body}")` (hex).
- A delivery that gets no 2xx is retried (Zoom: up to three more times); the
  simulator retries a few times, a little apart, as a fire-and-forget task.
- `app_deauthorized` (Zoom "Deauthorization"): sent when the user removes the
  app in the Marketplace; payload `account_id`, `user_id`, `client_id`,
  `deauthorization_time`, `signature`. The user's grants for the app are
  revoked at that moment (its tokens stop working).
- `meeting.deleted` (Zoom Meetings webhook reference): payload `account_id`,
  `operator`, `operator_id`, `object` {`uuid`, `id`, `host_id`, `topic`,
  `type`, `start_time`, `duration`, `timezone`}. Zoom sends it for deletes by
  the user in the Zoom client/web portal; this module sends it for the
  account-side delete below (relink's own API deletes are not announced by
  the simulator: relink must ignore its own deletes either way).

Not a provider path: the routes are under /_admin, as the test and demo
hooks for "the user did this at Zoom".
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from devtools.provider_sim.state import AccountState, SimState

log = logging.getLogger(__name__)
router = APIRouter(prefix="/_admin")


@dataclass
class Delivery:
    """One notification and what became of it (for the admin API)."""

    event: str
    body: dict[str, Any]
    attempts: int = 0
    status: int | None = None
    error: str | None = None
    done: bool = False


@dataclass
class Deliveries:
    """Notifications sent and the tasks still sending, per simulator app."""

    log: list[Delivery] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def deliveries(request: Request) -> Deliveries:
    app = request.app
    if not hasattr(app.state, "zoom_deliveries"):
        app.state.zoom_deliveries = Deliveries()
    found: Deliveries = app.state.zoom_deliveries
    return found


def sign(secret: str, *, timestamp: str, body: bytes) -> str:
    """Zoom's `x-zm-signature`."""
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return "v0=" + digest.hexdigest()


async def deliver(state: SimState, delivery: Delivery) -> None:
    """POST the signed notification, retrying a little while the endpoint fails."""
    settings = state.settings
    url = settings.zoom_webhook_url
    if not url:
        delivery.error, delivery.done = "no event notification endpoint configured", True
        return
    body = json.dumps(delivery.body, separators=(",", ":")).encode()
    async with httpx.AsyncClient(timeout=3.0) as client:
        for attempt in range(settings.zoom_webhook_attempts):
            if attempt:
                await asyncio.sleep(settings.zoom_webhook_retry_s * attempt)
            delivery.attempts += 1
            # Each attempt is signed afresh with its own timestamp.
            timestamp = str(int(state.now() * 1000))
            headers = {
                "content-type": "application/json",
                "x-zm-request-timestamp": timestamp,
                "x-zm-signature": sign(
                    settings.zoom_webhook_secret_token, timestamp=timestamp, body=body
                ),
                "user-agent": "Zoom Marketplace/1.0a",
            }
            try:
                answer = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                delivery.error = type(exc).__name__
                continue
            delivery.status = answer.status_code
            if 200 <= answer.status_code < 300:
                delivery.error = None
                break
            delivery.error = answer.text[:200]
    delivery.done = True


def send(request: Request, event: str, payload: dict[str, Any]) -> Delivery:
    """Queue a notification: sent on its own task, the route answers at once."""
    state: SimState = request.app.state.sim
    delivery = Delivery(
        event=event,
        body={"event": event, "event_ts": int(state.now() * 1000), "payload": payload},
    )
    sent = deliveries(request)
    sent.log.append(delivery)
    task = asyncio.get_running_loop().create_task(deliver(state, delivery))
    sent.tasks.add(task)
    task.add_done_callback(sent.tasks.discard)
    return delivery


def _zoom_account(state: SimState, email: str) -> AccountState | None:
    return state.accounts.get(("zoom", email.lower()))


@router.post("/accounts/zoom/{email}/remove-app")
async def remove_app(email: str, request: Request) -> JSONResponse:
    """The user removes relink's app in the Zoom App Marketplace: grants revoked, event sent."""
    state: SimState = request.app.state.sim
    account = _zoom_account(state, email)
    if account is None:
        return JSONResponse({"error": "no such Zoom account"}, status_code=404)
    revoked = state.revoke_account("zoom", email)
    payload = {
        "account_id": account.id,
        "user_id": account.id,
        "client_id": state.settings.zoom_client_id,
        "user_data_retention": "false",
        "deauthorization_time": state.now_dt().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        # Zoom's legacy verification token field; not a credential relink uses.
        "signature": hashlib.sha256(f"{account.id}:{state.now()}".encode()).hexdigest(),
    }
    send(request, "app_deauthorized", payload)
    return JSONResponse({"revoked_grants": revoked, "notification": "queued"})


@router.delete("/accounts/zoom/{email}/meetings/{meeting_id}")
async def delete_meeting_as_user(email: str, meeting_id: str, request: Request) -> JSONResponse:
    """The user deletes a meeting in the Zoom web portal: it is gone, `meeting.deleted` sent."""
    state: SimState = request.app.state.sim
    account = _zoom_account(state, email)
    meeting = account.meetings.pop(meeting_id, None) if account else None
    if account is None or meeting is None:
        return JSONResponse({"error": "no such meeting"}, status_code=404)
    payload = {
        "account_id": account.id,
        "operator": account.email,
        "operator_id": account.id,
        "operation": "single",
        "object": {
            k: meeting[k]
            for k in (
                "uuid",
                "id",
                "host_id",
                "topic",
                "type",
                "start_time",
                "duration",
                "timezone",
            )
            if k in meeting
        },
    }
    send(request, "meeting.deleted", payload)
    return JSONResponse({"deleted": meeting_id, "notification": "queued"})


@router.get("/webhooks/zoom/deliveries")
async def delivery_log(request: Request) -> dict[str, Any]:
    """Every notification sent since start, with its attempts and last answer."""
    return {
        "deliveries": [
            {
                "event": d.event,
                "attempts": d.attempts,
                "status": d.status,
                "error": d.error,
                "done": d.done,
                "sent_at": datetime.now(UTC).isoformat() if d.done else None,
            }
            for d in deliveries(request).log
        ]
    }


# -- Google Calendar push notifications (Calendar API v3 "Push notifications",
# developers.google.com/calendar/api/guides/push) ------------------------------


@dataclass
class GoogleChannel:
    """An events.watch channel: where to notify, with which token, and its counter."""

    id: str
    resource_id: str
    address: str
    token: str | None
    expiration_ms: int
    email: str
    number: int = 0


def google_channels(request: Request) -> dict[str, GoogleChannel]:
    app = request.app
    if not hasattr(app.state, "google_channels"):
        app.state.google_channels = {}
    found: dict[str, GoogleChannel] = app.state.google_channels
    return found


async def notify_channel(state: SimState, channel: GoogleChannel, resource_state: str) -> None:
    """POST one notification: headers only, no body; a few retries while the address fails."""
    channel.number += 1
    headers = {
        "X-Goog-Channel-ID": channel.id,
        "X-Goog-Resource-ID": channel.resource_id,
        "X-Goog-Resource-URI": "https://www.googleapis.com/calendar/v3/calendars/primary/events",
        "X-Goog-Resource-State": resource_state,
        "X-Goog-Message-Number": str(channel.number),
        "X-Goog-Channel-Expiration": datetime.fromtimestamp(
            channel.expiration_ms / 1000, UTC
        ).strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }
    if channel.token is not None:
        headers["X-Goog-Channel-Token"] = channel.token
    async with httpx.AsyncClient(timeout=3.0) as client:
        for attempt in range(state.settings.zoom_webhook_attempts):
            if attempt:
                await asyncio.sleep(state.settings.zoom_webhook_retry_s * attempt)
            try:
                answer = await client.post(channel.address, headers=headers)
            except httpx.HTTPError:
                continue
            if 200 <= answer.status_code < 300:
                return


def _spawn(request: Request, coro: Any) -> None:
    sent = deliveries(request)
    task = asyncio.get_running_loop().create_task(coro)
    sent.tasks.add(task)
    task.add_done_callback(sent.tasks.discard)


google_router = APIRouter(prefix="/google")


@google_router.post("/calendar/v3/calendars/{calendar_id}/events/watch")
async def watch_events(calendar_id: str, request: Request) -> Any:
    """events.watch: a Channel resource; a `sync` notification follows at once, as at Google."""
    from devtools.provider_sim.faults import gate, google_error

    account = await gate("google", request)
    if not isinstance(account, AccountState):
        return account
    state: SimState = request.app.state.sim
    try:
        body = await request.json()
    except ValueError:
        return google_error(400, "parseError", "Parse Error")
    # Google requires a channel id and type "web_hook" (the guide's "Create
    # notification channels"); the address must be HTTPS at Google, a
    # loopback http address is accepted by this local stand-in.
    if (
        not isinstance(body, dict)
        or not body.get("id")
        or body.get("type") not in ("web_hook", "webhook")
        or not str(body.get("address", "")).startswith(("https://", "http://127.0.0.1"))
    ):
        return google_error(400, "invalid", "Invalid channel")
    channels = google_channels(request)
    if body["id"] in channels:
        return google_error(400, "channelIdNotUnique", "Channel id not unique")
    ttl = int((body.get("params") or {}).get("ttl", 604800))
    channel = GoogleChannel(
        id=str(body["id"]),
        resource_id=hashlib.sha256(f"{account.email}:{calendar_id}".encode()).hexdigest()[:27],
        address=str(body["address"]),
        token=body.get("token"),
        expiration_ms=int((state.now() + ttl) * 1000),
        email=account.email,
    )
    channels[channel.id] = channel
    _spawn(request, notify_channel(state, channel, "sync"))
    return JSONResponse(
        {
            "kind": "api#channel",
            "id": channel.id,
            "resourceId": channel.resource_id,
            "resourceUri": f"https://www.googleapis.com/calendar/v3/calendars/{calendar_id}/events",
            "token": channel.token,
            "expiration": str(channel.expiration_ms),
        }
    )


@router.get("/google/channels")
async def channel_list(request: Request) -> dict[str, Any]:
    """Every open channel with its token and counter (a test hook: Google has none)."""
    return {
        "channels": [
            {
                "id": c.id,
                "resource_id": c.resource_id,
                "token": c.token,
                "email": c.email,
                "number": c.number,
                "address": c.address,
            }
            for c in google_channels(request).values()
        ]
    }


@router.delete("/accounts/google/{email}/events/{event_id}")
async def cancel_event_as_user(
    email: str, event_id: str, request: Request, notify: bool = True
) -> JSONResponse:
    """The user deletes an event in Google Calendar: cancelled, every channel of theirs notified.

    `notify=false` (a test hook) cancels without notifying, to show that only
    a genuine new notification makes relink look.
    """
    state: SimState = request.app.state.sim
    account = state.accounts.get(("google", email.lower()))
    event = account.meetings.get(event_id) if account else None
    if account is None or event is None or event.get("status") == "cancelled":
        return JSONResponse({"error": "no such event"}, status_code=404)
    # As events.delete does: the event stays readable with status "cancelled".
    event["status"] = "cancelled"
    notified = 0
    for channel in google_channels(request).values():
        if notify and channel.email == account.email and channel.expiration_ms > state.now() * 1000:
            _spawn(request, notify_channel(state, channel, "exists"))
            notified += 1
    return JSONResponse({"cancelled": event_id, "channels_notified": notified})
