"""A switch's progress as a server-sent-events stream (`GET /api/switches/{id}/events`
for the tutor, `GET /platform/v1/switches/{id}/events` for the platform's backend).

The stream says what the page's poll said, once per change: a `progress`
event whenever the state or a count changes, then a `settled` event when the
switch reaches a final state, and the stream ends. Each event's `id` is the
snapshot it carries (state and counts), so a client that reconnects with
`Last-Event-ID` (browsers' `EventSource` does it by itself) gets the next
change, not the one it already has. A comment line every `heartbeat_s` keeps
proxies from closing an idle stream; after `max_s` the stream ends and the
client reconnects, so no connection is held for ever.

The server reads the switch every `every_s` (a primary-key read) rather than
listening for notifications: the progress row is written by the migrator in
another process, and one read a second per open page costs less than a
LISTEN connection per stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from services.oauth_gateway.adapters.web.views import SwitchView
from services.oauth_gateway.domain import FINAL_STATES

HEARTBEAT_S = 15.0
MAX_S = 600.0

# The 200 answer of every progress stream in the OpenAPI document.
STREAM_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "Server-sent events: `progress` (the switch as `GET /api/switches/{id}` "
            "shows it, without the failed sessions) at each change, then `settled` "
            "when it reaches a final state; each event's id is the snapshot it "
            "carries, so a reconnect with `Last-Event-ID` resumes after it."
        ),
        # no schema: an event stream is not one document to validate
        "content": {"text/event-stream": {}},
    }
}


async def stream_response(
    fetch: Callable[[], Awaitable[SwitchView]],
    *,
    last_event_id: str | None,
    disconnected: Callable[[], Awaitable[bool]],
    every_s: float,
) -> StreamingResponse:
    """The progress stream of the switch `fetch` reads; its first read (a 404, say) comes
    before the stream starts."""
    first = await fetch()
    frames = progress_events(
        fetch,
        first=first,
        last_event_id=last_event_id,
        disconnected=disconnected,
        every_s=every_s,
    )
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def snapshot_id(view: SwitchView) -> str:
    """What a progress event carries, as its id: equal ids, nothing new to say."""
    waiting = view.waiting_until.isoformat() if view.waiting_until else "-"
    return (
        f"{view.state}.{view.sessions_total}.{view.sessions_migrated}."
        f"{view.sessions_failed}.{waiting}"
    )


def frame(event: str, view: SwitchView, *, retry_ms: int | None = None) -> str:
    """One SSE event: `event`, `id` and the view as JSON `data` (one line)."""
    data = json.dumps(view.model_dump(mode="json", exclude={"failed_sessions"}))
    head = f"retry: {retry_ms}\n" if retry_ms is not None else ""
    return f"{head}id: {snapshot_id(view)}\nevent: {event}\ndata: {data}\n\n"


async def progress_events(
    fetch: Callable[[], Awaitable[SwitchView]],
    *,
    first: SwitchView,
    last_event_id: str | None,
    disconnected: Callable[[], Awaitable[bool]],
    every_s: float,
    heartbeat_s: float = HEARTBEAT_S,
    max_s: float = MAX_S,
) -> AsyncIterator[str]:
    """The frames of one stream, starting from `first` (already read, so a 404 came before)."""
    started = last_beat = time.monotonic()
    sent = last_event_id
    view = first
    retry: int | None = max(100, int(every_s * 1000))
    while True:
        if snapshot_id(view) != sent:
            settled = view.state in FINAL_STATES
            yield frame("settled" if settled else "progress", view, retry_ms=retry)
            retry, sent, last_beat = None, snapshot_id(view), time.monotonic()
            if settled:
                return
        elif view.state in FINAL_STATES:
            # Reconnected after the last event: say it once more, then end.
            yield frame("settled", view)
            return
        now = time.monotonic()
        if now - started >= max_s:
            return
        if now - last_beat >= heartbeat_s:
            yield ": still running\n\n"
            last_beat = now
        await asyncio.sleep(every_s)
        if await disconnected():
            return
        view = await fetch()
