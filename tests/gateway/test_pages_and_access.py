"""The video-setup page's messages and progress, retry and rollback, and who may see what."""

from __future__ import annotations

import html as html_lib
import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from pydantic import SecretStr
from sqlalchemy import Engine, insert, select, text, update

from devtools.provider_sim.server import SimHandle
from services.core.db.models import (
    Booking,
    Connection,
    Outbox,
    ProviderSwitch,
    SessionMigration,
    SwitchRequest,
)
from services.core.db.models import Session as SessionRow
from services.oauth_gateway.adapters.web.auth import csrf_token
from services.oauth_gateway.settings import GatewaySettings
from tests.gateway.conftest import People, Person, connect, switch_id_of


def set_progress(engine: Engine, switch_id: uuid.UUID, **values: object) -> None:
    """What the migrator writes: the switch's progress row, made from the request first.

    A rollback deadline is the request's (the gateway's), copied to the progress row.
    """
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO provider_switches (id, tutor_id, from_provider, to_provider, "
                "generation, created_at, rollback_deadline) SELECT id, tutor_id, from_provider, "
                "to_provider, generation, requested_at, rollback_deadline FROM switch_requests "
                "WHERE id = :id ON CONFLICT (id) DO NOTHING"
            ),
            {"id": switch_id},
        )
        if values:
            conn.execute(
                update(ProviderSwitch).where(ProviderSwitch.id == switch_id).values(**values)
            )
        if "rollback_deadline" in values:
            conn.execute(
                update(SwitchRequest)
                .where(SwitchRequest.id == switch_id)
                .values(rollback_deadline=values["rollback_deadline"])
            )


async def page(http: httpx.AsyncClient, tutor: Person, switch_id: uuid.UUID) -> str:
    response = await http.get(
        f"/tutor/video-setup?success=true&switch={switch_id}", headers=tutor.cookies
    )
    assert response.status_code == 200
    return response.text


async def test_the_three_messages_and_progress(
    http: httpx.AsyncClient, switched: tuple[Person, uuid.UUID], engine: Engine
) -> None:
    tutor, switch_id = switched
    set_progress(engine, switch_id, state="MIGRATING", sessions_total=5, sessions_migrated=2)
    html = await page(http, tutor, switch_id)
    assert 'data-kind="in_progress"' in html
    assert 'id="progress" data-state="MIGRATING" data-total="5"' in html
    assert 'data-migrated="2" data-failed="0"' in html and 'data-remaining="3"' in html
    assert "Switch to Zoom" in html and 'data-in-flight="true"' in html

    set_progress(engine, switch_id, state="COMPLETED", sessions_migrated=5)
    html = await page(http, tutor, switch_id)
    assert "✅ Successfully connected video provider!" in html
    assert "🔄 5 future sessions were automatically updated with new meeting links." in html

    set_progress(
        engine, switch_id, state="COMPLETED_WITH_FAILURES", sessions_migrated=4, sessions_failed=1
    )
    html = await page(http, tutor, switch_id)
    assert (
        "⚠️ Some future sessions may need to be manually updated. Please check your sessions page."
        in html
    )
    assert 'id="retry-failed"' in html and "Retry failed" in html

    set_progress(
        engine,
        switch_id,
        state="COMPLETED",
        sessions_total=0,
        sessions_migrated=0,
        sessions_failed=0,
    )
    html = await page(http, tutor, switch_id)
    assert 'data-kind="success"' in html and "Successfully connected video provider!" in html
    assert "🔄" not in html and "⚠️" not in html
    assert 'id="roll-back"' in html


async def test_a_daily_limit_wait_says_when_the_rest_will_move(
    http: httpx.AsyncClient, switched: tuple[Person, uuid.UUID], engine: Engine
) -> None:
    tutor, switch_id = switched
    until = datetime(2030, 1, 10, 0, 0, tzinfo=UTC)
    set_progress(
        engine,
        switch_id,
        state="MIGRATING",
        sessions_total=250,
        sessions_migrated=100,
        waiting_until=until,
        waiting_reason="daily_quota",
    )
    html = await page(http, tutor, switch_id)
    assert 'data-kind="waiting"' in html
    assert "🔄 100 future sessions were automatically updated with new meeting links." in html
    said = (
        "Google Meet's daily limit on new meetings is reached: the remaining 150 sessions "
        "will move after Thursday 10 January 2030, 00:00 UTC, soonest first."
    )
    assert said in html_lib.unescape(html)
    body = (await http.get(f"/api/switches/{switch_id}", headers=tutor.headers)).json()
    assert body["message"]["kind"] == "waiting" and said in " ".join(body["message"]["lines"])
    assert body["waiting_until"].startswith("2030-01-10T00:00:00")

    # Once the reset has passed, the page shows plain progress again.
    set_progress(engine, switch_id, waiting_until=datetime.now(UTC) - timedelta(minutes=1))
    html = await page(http, tutor, switch_id)
    assert 'data-kind="in_progress"' in html and "⏳" not in html


async def test_first_connection_page_and_progress_json(
    http: httpx.AsyncClient, people: People
) -> None:
    tutor = people("tutor")
    response = await connect(http, tutor, "zoom")
    html = (await http.get(response.headers["location"], headers=tutor.cookies)).text
    assert 'data-kind="success"' in html and "Switch to Google Meet" in html


async def test_failed_sessions_shown_and_retry_recorded(
    http: httpx.AsyncClient,
    switched: tuple[Person, uuid.UUID],
    engine: Engine,
    people: People,
    gateway_settings: GatewaySettings,
) -> None:
    tutor, switch_id = switched
    student = people("student")
    session_id, booking_id = uuid.uuid4(), uuid.uuid4()
    start = datetime.now(UTC) + timedelta(days=2)
    set_progress(engine, switch_id)  # the migrator's progress row first, then its rows
    with engine.begin() as conn:
        conn.execute(
            insert(Booking).values(
                id=booking_id,
                tutor_id=tutor.id,
                student_id=student.id,
                topic="Algebra",
                duration_minutes=60,
            )
        )
        conn.execute(
            insert(SessionRow).values(
                id=session_id,
                tutor_id=tutor.id,
                student_id=student.id,
                booking_id=booking_id,
                provider="zoom",
                scheduled_start_at=start,
                duration_minutes=60,
            )
        )
        conn.execute(
            insert(SessionMigration).values(
                switch_id=switch_id,
                session_id=session_id,
                tutor_id=tutor.id,
                scheduled_start_at=start,
                state="FAILED",
                to_provider="google_meet",
                last_error="google_meet daily quota exhausted",
                attempts=3,
            )
        )
    set_progress(
        engine, switch_id, state="COMPLETED_WITH_FAILURES", sessions_total=1, sessions_failed=1
    )
    html = await page(http, tutor, switch_id)
    assert f'data-session-id="{session_id}"' in html
    assert "google_meet daily quota exhausted" in html

    # the page's form: cookie + CSRF field
    secret = gateway_settings.session_secret.get_secret_value()
    no_csrf = await http.post(f"/tutor/switches/{switch_id}/retry", headers=tutor.cookies)
    assert no_csrf.status_code == 403
    response = await http.post(
        f"/tutor/switches/{switch_id}/retry",
        headers=tutor.cookies,
        data={"csrf_token": csrf_token(tutor.token, secret=secret)},
    )
    assert response.status_code == 303
    with engine.connect() as conn:
        row = conn.execute(
            select(Outbox.payload).where(Outbox.event_type == "session.retry_requested")
        ).scalar_one()
    assert row["switch_id"] == str(switch_id) and row["session_ids"] == [str(session_id)]


async def test_rollback_restores_previous_connection(
    http: httpx.AsyncClient,
    switched: tuple[Person, uuid.UUID],
    engine: Engine,
    gateway_settings: GatewaySettings,
) -> None:
    tutor, switch_id = switched
    response = await http.post(f"/api/switches/{switch_id}/rollback", headers=tutor.headers)
    assert response.status_code == 202, response.text
    assert response.json()["to_provider"] == "zoom"
    with engine.connect() as conn:
        conn_row = conn.execute(
            select(Connection.provider, Connection.generation, Connection.previous_provider).where(
                Connection.tutor_id == tutor.id
            )
        ).one()
        requested = conn.scalar(
            select(SwitchRequest.rollback_requested_at).where(SwitchRequest.id == switch_id)
        )
        # the switch's progress is the migrator's to write, ROLLING_BACK included
        progress = conn.scalar(select(ProviderSwitch.state).where(ProviderSwitch.id == switch_id))
        event = conn.execute(
            select(Outbox.payload).where(Outbox.event_type == "switch.rollback_requested")
        ).scalar_one()
    assert tuple(conn_row) == ("zoom", 3, "google_meet")
    assert requested is not None and progress is None
    shown = await http.get(f"/api/switches/{switch_id}", headers=tutor.headers)
    assert shown.json()["state"] == "ROLLING_BACK"
    assert event == event | {"switch_id": str(switch_id), "to_provider": "zoom", "generation": 3}
    again = await http.post(f"/api/switches/{switch_id}/rollback", headers=tutor.headers)
    assert again.status_code == 409


async def test_rollback_refused_after_grace_period(
    http: httpx.AsyncClient, switched: tuple[Person, uuid.UUID], engine: Engine
) -> None:
    tutor, switch_id = switched
    set_progress(engine, switch_id, rollback_deadline=datetime.now(UTC) - timedelta(seconds=1))
    response = await http.post(f"/api/switches/{switch_id}/rollback", headers=tutor.headers)
    assert response.status_code == 409
    assert "grace period" in response.json()["detail"]


async def test_tutor_cannot_read_another_tutors_switch_or_sessions(
    http: httpx.AsyncClient, switched: tuple[Person, uuid.UUID], people: People, engine: Engine
) -> None:
    tutor_a, switch_a = switched
    tutor_b = people("tutor")
    student = people("student")
    booking_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            insert(Booking).values(
                id=booking_id,
                tutor_id=tutor_a.id,
                student_id=student.id,
                topic="A's",
                duration_minutes=30,
            )
        )
        conn.execute(
            insert(SessionRow).values(
                tutor_id=tutor_a.id,
                student_id=student.id,
                booking_id=booking_id,
                provider="google_meet",
                join_url="https://meet.example/a",
                scheduled_start_at=datetime.now(UTC) + timedelta(days=1),
                duration_minutes=30,
            )
        )
    for path in (f"/api/switches/{switch_a}", f"/tutor/video-setup?switch={switch_a}"):
        assert (await http.get(path, headers=tutor_b.headers)).status_code == 404
    assert (
        await http.post(f"/api/switches/{switch_a}/rollback", headers=tutor_b.headers)
    ).status_code == 404
    assert (
        await http.post(f"/api/switches/{switch_a}/retry", headers=tutor_b.headers)
    ).status_code == 404
    assert (await http.get("/api/tutor/sessions", headers=tutor_b.headers)).json() == []
    assert (await http.get("/api/switches", headers=tutor_b.headers)).json() == []
    mine = (await http.get("/api/tutor/sessions", headers=tutor_a.headers)).json()
    assert [s["join_url"] for s in mine] == ["https://meet.example/a"]
    theirs = (await http.get("/api/student/sessions", headers=student.headers)).json()
    assert [s["join_url"] for s in theirs] == ["https://meet.example/a"]
    other_student = people("student")
    assert (await http.get("/api/student/sessions", headers=other_student.headers)).json() == []
    # roles: students cannot use tutor endpoints and vice versa
    assert (await http.get("/api/tutor/sessions", headers=student.headers)).status_code == 403
    assert (await http.get("/api/student/sessions", headers=tutor_a.headers)).status_code == 403
    assert (await http.get("/api/tutor/sessions")).status_code == 401


async def test_dev_sign_in_page(http: httpx.AsyncClient, people: People) -> None:
    tutor = people("tutor", name="Dev Tutor")
    listing = await http.get("/dev/sign-in")
    assert listing.status_code == 200 and "Dev Tutor" in listing.text
    response = await http.post("/dev/sign-in", data={"user_id": str(tutor.id)})
    assert response.status_code == 303
    assert response.headers["location"] == "/tutor/video-setup"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()


async def test_ops_endpoints(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).json() == {"status": "ready"}
    metrics = await http.get("/metrics")
    assert "relink_gateway_http_requests_total" in metrics.text
    openapi = (await http.get("/openapi.json")).json()
    assert "/api/bookings" in openapi["paths"]


async def test_dev_sign_in_absent_outside_dev_mode(
    gateway_settings: GatewaySettings, sim: SimHandle
) -> None:
    from services.oauth_gateway.bootstrap import build_gateway
    from services.oauth_gateway.entrypoint import create_app
    from services.oauth_gateway.settings import GatewaySettings
    from tests.gateway.conftest import BASE, provider_settings_for

    settings = GatewaySettings(
        DATABASE_URL=gateway_settings.database_url,
        RELINK_DEV_MODE=False,
        RELINK_TOKEN_KEYS="k1:" + "A" * 43,
        RELINK_GATEWAY_SESSION_SECRET=SecretStr("s" * 40),
        RELINK_GATEWAY_PUBLIC_BASE_URL=BASE,
    )
    gw = build_gateway(settings, provider_settings=provider_settings_for(sim))
    try:
        app = create_app(gateway=gw)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
            assert (await c.get("/dev/sign-in")).status_code == 404
    finally:
        await gw.aclose()


async def test_older_switch_cannot_be_retried_or_rolled_back(
    http: httpx.AsyncClient, switched: tuple[Person, uuid.UUID], engine: Engine
) -> None:
    tutor, older = switched
    newer = switch_id_of(await connect(http, tutor, "zoom"))
    set_progress(
        engine, older, state="COMPLETED_WITH_FAILURES", sessions_total=1, sessions_failed=1
    )
    retry = await http.post(f"/api/switches/{older}/retry", headers=tutor.headers)
    assert retry.status_code == 409 and "newer switch" in retry.json()["detail"]
    rollback = await http.post(f"/api/switches/{older}/rollback", headers=tutor.headers)
    assert rollback.status_code == 409
    assert (await http.get(f"/api/switches/{newer}", headers=tutor.headers)).json()["can_roll_back"]
    metrics = (await http.get("/metrics")).text
    # prometheus_client orders the labels by name
    assert 'relink_gateway_oauth_callbacks_total{outcome="switched",provider="zoom"} 1' in metrics
    assert re.search(r'\{outcome="first_connection",provider="[a-z_]+"\} 1', metrics)
