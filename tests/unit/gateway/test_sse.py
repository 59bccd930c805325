"""The progress stream's frames (`adapters/web/sse.py`), from a scripted switch."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

from services.oauth_gateway.adapters.web.sse import progress_events, snapshot_id
from services.oauth_gateway.adapters.web.views import MessageView, SwitchView


def view(state: str, migrated: int = 0, total: int = 3) -> SwitchView:
    return SwitchView(
        id=uuid.UUID(int=1),
        from_provider="zoom",
        to_provider="google_meet",
        generation=2,
        state=state,
        sessions_total=total,
        sessions_migrated=migrated,
        sessions_failed=0,
        sessions_remaining=total - migrated,
        created_at=datetime(2026, 11, 27, tzinfo=UTC),
        message=MessageView(kind="in_progress", lines=["…"]),
    )


async def frames(script: list[SwitchView], **kw: object) -> list[str]:
    reads: Iterator[SwitchView] = iter(script[1:])

    async def fetch() -> SwitchView:
        return next(reads, script[-1])

    async def never() -> bool:
        return False

    options = {"last_event_id": None, "disconnected": never, "every_s": 0.0, **kw}
    return [f async for f in progress_events(fetch, first=script[0], **options)]  # type: ignore[arg-type]


def kinds(out: list[str]) -> list[str]:
    return [f.split("event: ")[1].split("\n")[0] if "event: " in f else "comment" for f in out]


async def test_each_change_once_then_settled() -> None:
    script = [view("PENDING"), view("PENDING"), view("MIGRATING", 1), view("MIGRATING", 1)]
    script += [view("COMPLETED", 3)]
    out = await frames(script)
    assert kinds(out) == ["progress", "progress", "settled"]
    assert out[0].startswith("retry: ")  # the reconnect delay, said once
    assert f"id: {snapshot_id(view('MIGRATING', 1))}\n" in out[1]


async def test_a_resumed_stream_skips_what_the_client_has() -> None:
    script = [view("MIGRATING", 1), view("MIGRATING", 2), view("COMPLETED", 3)]
    out = await frames(script, last_event_id=snapshot_id(view("MIGRATING", 1)))
    assert kinds(out) == ["progress", "settled"]
    # reconnected after the final event: it is said once more, and the stream ends
    done = await frames([view("COMPLETED", 3)], last_event_id=snapshot_id(view("COMPLETED", 3)))
    assert kinds(done) == ["settled"]


async def test_heartbeats_while_nothing_changes_and_an_end_after_max_s() -> None:
    out = await frames([view("MIGRATING", 1)] * 3, heartbeat_s=0.0, max_s=0.05)
    assert kinds(out)[0] == "progress"
    assert "comment" in kinds(out) and all(f == ": still running\n\n" for f in out[1:])
