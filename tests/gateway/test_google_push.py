"""A Google Calendar event cancelled by the tutor in Google Calendar: the gateway's push
channel (events.watch) hears of it, the page shows it, and one click re-creates the meeting."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, text

from devtools.provider_sim.server import SimHandle, free_port
from services.core.settings import CommonSettings
from services.oauth_gateway.bootstrap import build_gateway
from services.oauth_gateway.entrypoint import create_app
from services.oauth_gateway.settings import GatewaySettings
from tests.gateway.conftest import People, Person, connect, csrf_for, provider_settings_for


def wait_for(condition: Any, *, timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Live:
    base: str
    settings: GatewaySettings
    client: httpx.AsyncClient


@pytest.fixture
async def live(settings: CommonSettings, sim: SimHandle) -> AsyncIterator[Live]:
    """The gateway on a real port (Google's notifications reach it) and a browser on it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gw_settings = GatewaySettings(
        DATABASE_URL=settings.database_url,
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        RELINK_TOPIC_PREFIX=settings.topic_prefix,
        RELINK_GATEWAY_PUBLIC_BASE_URL=base,
        RELINK_GATEWAY_DB_POOL_SIZE=4,
    )
    served = build_gateway(gw_settings, provider_settings=provider_settings_for(sim, base))
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(gateway=served),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="the gateway")
    browser_gw = build_gateway(gw_settings, provider_settings=provider_settings_for(sim, base))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(gateway=browser_gw)), base_url=base, timeout=30
    ) as client:
        yield Live(base, gw_settings, client)
    await browser_gw.aclose()
    server.should_exit = True
    thread.join(10)
    async with httpx.AsyncClient(base_url=sim.base_url) as admin:
        await admin.post("/_admin/reset")


def channel_of(engine: Engine, tutor_id: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT id, resource_id, last_message_number FROM provider_channels"
                " WHERE tutor_id = :t"
            ),
            {"t": tutor_id},
        ).first()


def deletions(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(text("SELECT session_id, meeting_external_id FROM meeting_deletions"))
        )


@pytest.fixture
async def booked(live: Live, people: People, engine: Engine) -> Person:
    tutor = people("tutor")
    assert (await connect(live.client, tutor, "google_meet")).status_code == 303
    # The channel was opened, and Google's first "sync" notification was taken.
    wait_for(
        lambda: (row := channel_of(engine, tutor.id)) and row.last_message_number >= 1,
        what="the sync notification",
    )
    student = people("student", name="Gil Student")
    answer = await live.client.post(
        "/api/bookings",
        headers=tutor.headers,
        json={
            "student_id": str(student.id),
            "topic": "Statistics",
            "scheduled_start_at": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
            "duration_minutes": 30,
        },
    )
    assert answer.status_code == 201, answer.text
    session = answer.json()
    with engine.connect() as conn:
        session["event_id"] = conn.scalar(
            text("SELECT meeting_external_id FROM sessions WHERE id = :id"), {"id": session["id"]}
        )
    tutor.session = session
    return tutor


async def test_event_cancelled_in_google_calendar_is_shown_and_recreated(
    live: Live, booked: Person, sim: SimHandle, engine: Engine
) -> None:
    tutor, session = booked, booked.session
    async with httpx.AsyncClient(base_url=sim.base_url) as google:
        cancelled = await google.delete(
            f"/_admin/accounts/google/{tutor.email}/events/{session['event_id']}"
        )
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["channels_notified"] == 1
        wait_for(lambda: deletions(engine), what="the deletion to be recorded")
        assert [(str(s), m) for s, m in deletions(engine)] == [(session["id"], session["event_id"])]

        page = await live.client.get("/tutor/video-setup", headers=tutor.cookies)
        assert "The meeting for Statistics with Gil Student was deleted at Google Meet" in page.text

        recreated = await live.client.post(
            f"/tutor/sessions/{session['id']}/recreate-meeting",
            headers=tutor.cookies | csrf_for(tutor, live.settings),
        )
        assert recreated.status_code == 303, recreated.text
        with engine.connect() as conn:
            new_id = conn.scalar(
                text("SELECT meeting_external_id FROM sessions WHERE id = :id"),
                {"id": session["id"]},
            )
        assert new_id != session["event_id"]
        account = (await google.get(f"/_admin/accounts/google/{tutor.email}")).json()
        assert [m["id"] for m in account["meetings"]] == [new_id]
    page = await live.client.get("/tutor/video-setup", headers=tutor.cookies)
    assert 'id="deleted-meetings"' not in page.text


async def test_forged_or_replayed_channel_notifications_change_nothing(
    live: Live, booked: Person, sim: SimHandle, engine: Engine
) -> None:
    tutor, session = booked, booked.session
    channel = channel_of(engine, tutor.id)
    async with httpx.AsyncClient(base_url=sim.base_url) as google:
        listed = (await google.get("/_admin/google/channels")).json()["channels"]
        [at_google] = [c for c in listed if c["id"] == channel.id]
        # The event is gone at Google, but only a genuine, new notification may say so.
        gone = await google.delete(
            f"/_admin/accounts/google/{tutor.email}/events/{session['event_id']}",
            params={"notify": "false"},
        )
        assert gone.json()["channels_notified"] == 0
    headers = {
        "X-Goog-Channel-ID": channel.id,
        "X-Goog-Resource-ID": channel.resource_id,
        "X-Goog-Resource-State": "exists",
        "X-Goog-Message-Number": str(channel.last_message_number + 5),
    }
    async with httpx.AsyncClient(base_url=live.base) as poster:
        for forged in (
            headers | {"X-Goog-Channel-Token": "guessed"},
            headers,  # no token at all
            headers | {"X-Goog-Channel-ID": "some-other-channel", "X-Goog-Channel-Token": "x"},
        ):
            answer = await poster.post("/webhooks/google", headers=forged)
            assert answer.status_code == 401, answer.text
        assert channel_of(engine, tutor.id).last_message_number == channel.last_message_number
        assert deletions(engine) == []

        # A replay: the genuine token, a message number already processed.
        genuine = headers | {"X-Goog-Channel-Token": at_google["token"]}
        replay = genuine | {"X-Goog-Message-Number": str(channel.last_message_number)}
        answer = await poster.post("/webhooks/google", headers=replay)
        assert answer.json() == {"status": "duplicate"}
        assert deletions(engine) == []

        # The next genuine notification is acted on, once.
        answer = await poster.post("/webhooks/google", headers=genuine)
        assert answer.json() == {"status": "recorded:1"}
        again = await poster.post("/webhooks/google", headers=genuine)
        assert again.json() == {"status": "duplicate"}
    assert len(deletions(engine)) == 1
