"""Zoom's event notifications at the gateway: signatures, URL validation, replays, the tutor
removing relink's app at Zoom (end to end from the simulator to the tutor's email), and a
meeting deleted at Zoom (to the video-setup page and a re-created meeting at the simulator)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, text

from devtools.provider_sim.server import SimHandle, free_port, run_in_thread
from devtools.provider_sim.settings import ProviderSimSettings
from devtools.smtp_sink.sink import SmtpSink
from services.core.settings import CommonSettings
from services.notifier.settings import NotifierSettings
from services.oauth_gateway.bootstrap import build_gateway
from services.oauth_gateway.entrypoint import create_app
from services.oauth_gateway.settings import DEV_ZOOM_WEBHOOK_SECRET_TOKEN, GatewaySettings
from tests.gateway.conftest import BASE, People, Person, connect, csrf_for, provider_settings_for
from tests.notifier.conftest import running_notifier
from tests.relay.conftest import relay_settings, running_relay

SECRET = DEV_ZOOM_WEBHOOK_SECRET_TOKEN


def wait_for(condition: Callable[[], Any], *, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def signed(body: bytes, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    """The headers Zoom sends with `body` (Zoom "Using webhooks": v0 signature)."""
    timestamp = str(int((time.time() if at is None else at) * 1000))
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return {
        "content-type": "application/json",
        "x-zm-request-timestamp": timestamp,
        "x-zm-signature": f"v0={digest.hexdigest()}",
    }


def deauthorized(user_id: str, *, at: datetime | None = None) -> bytes:
    when = at or datetime.now(UTC)
    return json.dumps(
        {
            "event": "app_deauthorized",
            "event_ts": int(when.timestamp() * 1000),
            "payload": {
                "account_id": user_id,
                "user_id": user_id,
                "client_id": "relink-dev-zoom",
                "deauthorization_time": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "signature": "x",
            },
        }
    ).encode()


def connection_row(engine: Engine, tutor_id: uuid.UUID) -> dict[str, Any]:
    with engine.connect() as conn:
        row = (
            conn.execute(
                text(
                    "SELECT provider, provider_account_id, access_token_encrypted,"
                    " refresh_token_encrypted, disconnected_at, disconnect_reason, generation"
                    " FROM tutor_video_provider_connections WHERE tutor_id = :t"
                ),
                {"t": tutor_id},
            )
            .mappings()
            .one()
        )
    return dict(row)


def outbox_types(engine: Engine, tutor_id: uuid.UUID) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                text("SELECT event_type FROM outbox WHERE aggregate_id = :t ORDER BY id"),
                {"t": str(tutor_id)},
            )
        )


def notifications_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM provider_notifications")) or 0)


@pytest.fixture
async def zoom_tutor(http: httpx.AsyncClient, people: People, engine: Engine) -> Person:
    """A tutor connected to Zoom (through the simulator) with one upcoming session there."""
    tutor = people("tutor")
    assert (await connect(http, tutor, "zoom")).status_code == 303
    student = people("student", name="Sam Student")
    booked = await http.post(
        "/api/bookings",
        headers=tutor.headers,
        json={
            "student_id": str(student.id),
            "topic": "Calculus",
            "scheduled_start_at": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
            "duration_minutes": 45,
        },
    )
    assert booked.status_code == 201, booked.text
    tutor.session = booked.json()
    return tutor


# -- signatures, validation, staleness, replays (the gateway alone) -----------


async def test_url_validation_answers_the_challenge(http: httpx.AsyncClient) -> None:
    body = json.dumps(
        {"event": "endpoint.url_validation", "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}}
    ).encode()
    answer = await http.post("/webhooks/zoom", content=body, headers=signed(body))
    assert answer.status_code == 200, answer.text
    expected = hmac.new(SECRET.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
    assert answer.json() == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected}

    unsigned = await http.post(
        "/webhooks/zoom", content=body, headers={"content-type": "application/json"}
    )
    assert unsigned.status_code == 401


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda b: signed(b, secret="not-the-secret-token"), id="wrong-secret"),
        pytest.param(lambda b: signed(b, at=time.time() - 600), id="stale-timestamp-10-min"),
        pytest.param(
            lambda b: signed(b) | {"x-zm-signature": "v0=" + "0" * 64}, id="bad-signature"
        ),
        pytest.param(
            lambda b: {
                **signed(b),
                "x-zm-request-timestamp": str(int(time.time() * 1000) + 1),
            },
            id="timestamp-not-the-signed-one",
        ),
    ],
)
async def test_forged_or_stale_deauthorization_changes_nothing(
    http: httpx.AsyncClient,
    zoom_tutor: Person,
    engine: Engine,
    forge: Callable[[bytes], dict[str, str]],
) -> None:
    before = connection_row(engine, zoom_tutor.id)
    body = deauthorized(before["provider_account_id"])
    answer = await http.post("/webhooks/zoom", content=body, headers=forge(body))
    assert answer.status_code == 401, answer.text
    after = connection_row(engine, zoom_tutor.id)
    assert after == before
    assert after["access_token_encrypted"] is not None
    assert "provider.disconnected" not in outbox_types(engine, zoom_tutor.id)
    assert notifications_count(engine) == 0


async def test_tampered_body_is_refused(
    http: httpx.AsyncClient, zoom_tutor: Person, engine: Engine
) -> None:
    before = connection_row(engine, zoom_tutor.id)
    headers = signed(deauthorized("someone-else"))
    body = deauthorized(before["provider_account_id"])
    answer = await http.post("/webhooks/zoom", content=body, headers=headers)
    assert answer.status_code == 401
    assert connection_row(engine, zoom_tutor.id) == before


async def test_replayed_deauthorization_changes_nothing_after_a_reconnect(
    http: httpx.AsyncClient, zoom_tutor: Person, engine: Engine
) -> None:
    account = connection_row(engine, zoom_tutor.id)["provider_account_id"]
    body = deauthorized(account)
    headers = signed(body)
    first = await http.post("/webhooks/zoom", content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"status": "disconnected:1"}
    assert connection_row(engine, zoom_tutor.id)["access_token_encrypted"] is None

    # The tutor reconnects; the same notification (same body, re-sent with a
    # fresh valid signature, as Zoom's retries are) must not disconnect them again.
    assert (await connect(http, zoom_tutor, "zoom")).status_code == 303
    reconnected = connection_row(engine, zoom_tutor.id)
    assert reconnected["access_token_encrypted"] is not None
    assert reconnected["disconnected_at"] is None
    for resent in (headers, signed(body)):
        again = await http.post("/webhooks/zoom", content=body, headers=resent)
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate"}
    assert connection_row(engine, zoom_tutor.id) == reconnected
    assert outbox_types(engine, zoom_tutor.id).count("provider.disconnected") == 1


async def test_bookings_need_a_reconnect_after_deauthorization(
    http: httpx.AsyncClient, zoom_tutor: Person, people: People, engine: Engine
) -> None:
    account = connection_row(engine, zoom_tutor.id)["provider_account_id"]
    body = deauthorized(account)
    assert (
        await http.post("/webhooks/zoom", content=body, headers=signed(body))
    ).status_code == 200
    student = people("student")
    refused = await http.post(
        "/api/bookings",
        headers=zoom_tutor.headers,
        json={
            "student_id": str(student.id),
            "topic": "Geometry",
            "scheduled_start_at": (datetime.now(UTC) + timedelta(days=4)).isoformat(),
            "duration_minutes": 30,
        },
    )
    assert refused.status_code == 409
    assert "reconnect" in refused.json()["detail"]


# -- end to end: the simulator sends, the gateway acts, the notifier emails ---


@dataclass
class LiveGateway:
    """The gateway served over real HTTP (the simulator POSTs to it) and a simulator aimed at it."""

    base_url: str
    sim: SimHandle


def _serve(app: Any, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.02)
    return server, thread


@pytest.fixture
def live(gateway_settings: GatewaySettings) -> Iterator[LiveGateway]:
    """A simulator whose Zoom app sends its events to a gateway listening on a real port."""
    port = free_port()
    sim = run_in_thread(
        settings=ProviderSimSettings(
            port=0,
            seed=7,
            zoom_webhook_url=f"http://127.0.0.1:{port}/webhooks/zoom",
            zoom_webhook_retry_s=0.2,
        )
    )
    # The served gateway only takes notifications: database work, no provider calls.
    served = build_gateway(gateway_settings, provider_settings=provider_settings_for(sim))
    server, thread = _serve(create_app(gateway=served), port)
    try:
        yield LiveGateway(f"http://127.0.0.1:{port}", sim)
    finally:
        server.should_exit = True
        thread.join(10)
        sim.stop()


@pytest.fixture
async def live_http(
    gateway_settings: GatewaySettings, live: LiveGateway
) -> AsyncIterator[httpx.AsyncClient]:
    """The tutor's browser on a gateway whose provider clients use the live simulator."""
    gw = build_gateway(gateway_settings, provider_settings=provider_settings_for(live.sim))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(gateway=gw)), base_url=BASE, timeout=30
    ) as client:
        yield client
    await gw.aclose()


def deliveries(sim: SimHandle) -> list[dict[str, Any]]:
    return list(httpx.get(f"{sim.base_url}/_admin/webhooks/zoom/deliveries").json()["deliveries"])


def relay_and_notify(settings: CommonSettings, tmp_path: Path) -> list[Any]:
    """Run the relay and the notifier until the outbox's emails arrive; the mails received."""
    with SmtpSink(folder=tmp_path / "mail") as sink:
        notifier = NotifierSettings(
            DATABASE_URL=settings.database_url,
            KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
            RELINK_TOPIC_PREFIX=settings.topic_prefix,
            RELINK_SMTP_HOST=sink.host,
            RELINK_SMTP_PORT=sink.port,
            RELINK_NOTIFIER_GROUP_ID=f"notifier-{uuid.uuid4().hex[:8]}",
            RELINK_NOTIFIER_POLL_TIMEOUT_S=0.2,
            RELINK_NOTIFIER_GATEWAY_PUBLIC_URL="https://relink.test",
        )
        with running_relay(relay_settings(settings)), running_notifier(notifier):
            wait_for(lambda: len(sink.mails()) >= 1, what="an email")
            time.sleep(1.0)  # a second email would have been sent by now
        return list(sink.mails())


async def test_removing_the_app_at_zoom_disconnects_and_emails_the_tutor(
    live: LiveGateway,
    live_http: httpx.AsyncClient,
    people: People,
    engine: Engine,
    settings: CommonSettings,
    relink_env: dict[str, str],
    tmp_path: Path,
) -> None:
    tutor = people("tutor", name="Tess Tutor")
    assert (await connect(live_http, tutor, "zoom")).status_code == 303
    student = people("student")
    booked = await live_http.post(
        "/api/bookings",
        headers=tutor.headers,
        json={
            "student_id": str(student.id),
            "topic": "Calculus",
            "scheduled_start_at": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
            "duration_minutes": 45,
        },
    )
    assert booked.status_code == 201, booked.text

    # The tutor removes relink's app in the Zoom Marketplace (at the simulator).
    async with httpx.AsyncClient(base_url=live.sim.base_url) as zoom:
        removed = await zoom.post(f"/_admin/accounts/zoom/{tutor.email}/remove-app")
    assert removed.status_code == 200, removed.text
    assert removed.json()["revoked_grants"] >= 1
    wait_for(lambda: all(d["done"] for d in deliveries(live.sim)), what="the notification")
    [sent] = deliveries(live.sim)
    assert (sent["event"], sent["status"]) == ("app_deauthorized", 200)

    row = connection_row(engine, tutor.id)
    assert row["provider"] == "zoom"
    assert row["access_token_encrypted"] is None
    assert row["refresh_token_encrypted"] is None
    assert row["disconnect_reason"] == "app_deauthorized"
    assert outbox_types(engine, tutor.id) == ["provider.disconnected"]

    page = await live_http.get("/tutor/video-setup", headers=tutor.cookies)
    assert page.status_code == 200
    assert 'id="reconnect-required"' in page.text
    assert "relink can no longer create, move or re-create meetings there" in page.text
    assert '<span id="stranded-count">1</span> upcoming session on Zoom' in page.text
    assert 'href="/oauth/zoom/start"' in page.text

    # The relay publishes the outbox row; the notifier emails the tutor once.
    mails = relay_and_notify(settings, tmp_path)
    assert len(mails) == 1
    [mail] = mails
    assert mail.rcpt_to == (tutor.email,)
    assert "relink lost access to Zoom" in mail.subject
    body = mail.body()
    assert "1 upcoming session on Zoom" in body
    assert "https://relink.test/tutor/video-setup" in body
    with engine.connect() as conn:
        kinds = list(
            conn.scalars(
                text("SELECT kind FROM notifications WHERE recipient = :r"), {"r": tutor.email}
            )
        )
    assert kinds == ["tutor_disconnected"]


async def test_meeting_deleted_at_zoom_is_shown_and_recreated(
    live: LiveGateway,
    live_http: httpx.AsyncClient,
    people: People,
    engine: Engine,
    gateway_settings: GatewaySettings,
    settings: CommonSettings,
    tmp_path: Path,
) -> None:
    tutor = people("tutor")
    assert (await connect(live_http, tutor, "zoom")).status_code == 303
    student = people("student", name="Sam Student")
    booked = await live_http.post(
        "/api/bookings",
        headers=tutor.headers,
        json={
            "student_id": str(student.id),
            "topic": "Trigonometry",
            "scheduled_start_at": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
            "duration_minutes": 45,
        },
    )
    assert booked.status_code == 201, booked.text
    session = booked.json()
    meeting_id = session["join_url"].rsplit("/", 1)[-1]

    # The tutor deletes the meeting in Zoom's web portal (at the simulator).
    async with httpx.AsyncClient(base_url=live.sim.base_url) as zoom:
        gone = await zoom.delete(f"/_admin/accounts/zoom/{tutor.email}/meetings/{meeting_id}")
        assert gone.status_code == 200, gone.text
        wait_for(lambda: all(d["done"] for d in deliveries(live.sim)), what="meeting.deleted")
        assert [(d["event"], d["status"]) for d in deliveries(live.sim)] == [
            ("meeting.deleted", 200)
        ]

        page = await live_http.get("/tutor/video-setup", headers=tutor.cookies)
        assert 'id="deleted-meetings"' in page.text
        assert "The meeting for Trigonometry with Sam Student was deleted at Zoom" in page.text
        assert f'data-meeting-id="{meeting_id}"' in page.text

        # One click re-creates it at the tutor's current provider.
        recreated = await live_http.post(
            f"/tutor/sessions/{session['id']}/recreate-meeting",
            headers=tutor.cookies | csrf_for(tutor, gateway_settings),
        )
        assert recreated.status_code == 303, recreated.text
        with engine.connect() as conn:
            new_id, new_url = conn.execute(
                text("SELECT meeting_external_id, join_url FROM sessions WHERE id = :id"),
                {"id": session["id"]},
            ).one()
        assert new_id != meeting_id
        account = (await zoom.get(f"/_admin/accounts/zoom/{tutor.email}")).json()
        assert [str(m["id"]) for m in account["meetings"]] == [new_id]
        assert (await zoom.get(new_url)).status_code == 200  # the new link joins

    page = await live_http.get("/tutor/video-setup", headers=tutor.cookies)
    assert 'id="deleted-meetings"' not in page.text
    # A second click has nothing to re-create.
    again = await live_http.post(
        f"/tutor/sessions/{session['id']}/recreate-meeting",
        headers=tutor.cookies | csrf_for(tutor, gateway_settings),
    )
    assert again.status_code == 404

    # The student is emailed the new link, once.
    mails = relay_and_notify(settings, tmp_path)
    assert [m.rcpt_to for m in mails] == [(student.email,)]
    assert "has a new Zoom link" in mails[0].subject
    assert new_url in mails[0].body()


async def test_deletion_of_a_meeting_no_longer_the_sessions_is_ignored(
    http: httpx.AsyncClient, zoom_tutor: Person, engine: Engine
) -> None:
    """relink's own deletes (rollback, cleanup) target meetings no session uses any more."""
    body = json.dumps(
        {
            "event": "meeting.deleted",
            "event_ts": int(time.time() * 1000),
            "payload": {
                "account_id": "a",
                "operator": "tutor@zoom.example",
                "operator_id": "a",
                "object": {"id": 81999999999, "uuid": "u", "host_id": "a", "topic": "old"},
            },
        }
    ).encode()
    answer = await http.post("/webhooks/zoom", content=body, headers=signed(body))
    assert answer.status_code == 200
    assert answer.json() == {"status": "ignored"}
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM meeting_deletions")) == 0


async def test_deauthorization_of_the_kept_previous_zoom_connection_forgets_it(
    http: httpx.AsyncClient, zoom_tutor: Person, engine: Engine, gateway_settings: GatewaySettings
) -> None:
    """After a switch to Google, removing the app at Zoom erases the tokens kept for rollback."""
    account = connection_row(engine, zoom_tutor.id)["provider_account_id"]
    switched = await connect(http, zoom_tutor, "google_meet")
    assert switched.status_code == 303
    switch_id = switched.headers["location"].split("switch=")[1]
    body = deauthorized(account)
    answer = await http.post("/webhooks/zoom", content=body, headers=signed(body))
    assert answer.json() == {"status": "previous_forgotten"}
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT provider, access_token_encrypted, previous_access_token_encrypted,"
                " previous_refresh_token_encrypted FROM tutor_video_provider_connections"
                " WHERE tutor_id = :t"
            ),
            {"t": zoom_tutor.id},
        ).one()
    assert row.provider == "google_meet"
    assert row.access_token_encrypted is not None  # the Google connection is untouched
    assert (row.previous_access_token_encrypted, row.previous_refresh_token_encrypted) == (
        None,
        None,
    )
    # Nothing to restore any more: the rollback is refused rather than reviving a revoked grant.
    refused = await http.post(
        f"/api/switches/{switch_id}/rollback",
        headers=zoom_tutor.headers,
    )
    assert refused.status_code == 409
    assert "no longer kept" in refused.json()["detail"]
    assert "provider.disconnected" not in outbox_types(engine, zoom_tutor.id)
