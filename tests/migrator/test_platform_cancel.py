"""A session cancelled through the service API (issue 19), through every real part.

The platform's backend only: users, a Google Meet tutor (connected in their own
browser against the simulator), sessions booked and cancelled over
`/platform/v1` on the gateway, the relay, `relink migrator` (which owes the
meetings' deletions and retries them) and the notifier with an SMTP sink (the
student's email and its iCalendar CANCEL). One session is cancelled before any
switch, while its provider is down; two more while the tutor's switch to Zoom
is half done (Zoom's daily budget of one create holds the second): every one
ends cancelled with no live meeting at either provider.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from devtools.provider_sim.server import SimHandle
from devtools.smtp_sink.sink import SmtpSink
from services.core.settings import CommonSettings
from services.oauth_gateway.adapters.web.auth import issue_token
from services.oauth_gateway.bootstrap import build_gateway
from services.oauth_gateway.entrypoint import create_app
from services.oauth_gateway.settings import GatewaySettings
from tests.gateway.conftest import BASE, Person, connect, provider_settings_for
from tests.gateway.test_bookings_and_keys import live_meetings, sim_account
from tests.gateway.test_platform_api import bearer, new_key
from tests.migrator.conftest import wait_for
from tests.notifier.conftest import calendar_of
from tests.providers.conftest import SimAdmin

TOPIC = "Organic chemistry"


@pytest.fixture
async def platform_http(
    settings: CommonSettings, migrator_sim: SimHandle
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The gateway's app (as tests/gateway run it), its providers the migrator's simulator;
    and its sign-in secret (the platform signs its tutors' tokens with it)."""
    gateway_settings = GatewaySettings(
        DATABASE_URL=settings.database_url,
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        RELINK_TOPIC_PREFIX=settings.topic_prefix,
        RELINK_GATEWAY_PUBLIC_BASE_URL=BASE,
        RELINK_GATEWAY_DB_POOL_SIZE=4,
    )
    gateway = build_gateway(gateway_settings, provider_settings=provider_settings_for(migrator_sim))
    app = create_app(gateway=gateway)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, timeout=30
    ) as client:
        yield client, gateway_settings.session_secret.get_secret_value()
    await gateway.aclose()


def mails_to(sink: SmtpSink, email: str, subject: str) -> Callable[[], list[Any]]:
    def received() -> list[Any]:
        return [m for m in sink.mails() if m.rcpt_to == (email,) and subject in m.subject]

    return received


def meetings_left(engine: Engine, ids: list[str]) -> list[Any]:
    """The cancelled sessions that still name a meeting (the migrator clears each it deletes)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT id, status, provider, meeting_external_id FROM sessions "
                    "WHERE id = ANY(:ids) AND (status <> 'CANCELLED' "
                    "OR meeting_external_id IS NOT NULL)"
                ),
                {"ids": ids},
            )
        )


async def test_cancelled_sessions_lose_their_meetings_and_students_get_a_calendar_cancel(
    platform_http: tuple[httpx.AsyncClient, str],
    engine: Engine,
    settings: CommonSettings,
    migrator_sim: SimHandle,
    sim_admin: SimAdmin,
    relay: Any,
    tutor_mail: SmtpSink,
    start_migrator: Any,
    relink_env: dict[str, str],
) -> None:
    http, secret = platform_http
    key = bearer(
        new_key(relink_env, "users:write", "users:read", "sessions:write", "sessions:read")
    )
    run = uuid.uuid4().hex[:8]
    tutor_email = f"tutor-{run}@example.com"
    made = await http.put(
        f"/platform/v1/users/t-{run}",
        json={"role": "tutor", "name": "Ada", "email": tutor_email, "timezone": "Europe/Berlin"},
        headers=key,
    )
    assert made.status_code == 201, made.text
    students = {}
    for name in ("a", "b", "c"):
        email = f"student-{name}-{run}@example.com"
        put = await http.put(
            f"/platform/v1/users/s{name}-{run}",
            json={"role": "student", "name": f"Student {name}", "email": email},
            headers=key,
        )
        assert put.status_code == 201, put.text
        students[name] = email
    tutor_id = uuid.UUID(made.json()["relink_id"])
    tutor = Person(
        tutor_id,
        tutor_email,
        "tutor",
        issue_token(tutor_id, role="tutor", secret=secret, ttl_s=3600),
    )
    assert (await connect(http, tutor, "google_meet")).status_code == 303

    sessions: dict[str, dict[str, Any]] = {}
    for name, days in (("a", 3), ("b", 4), ("c", 5)):
        booked = await http.post(
            "/platform/v1/sessions",
            json={
                "id": f"sess-{name}-{run}",
                "tutor": f"t-{run}",
                "student": f"s{name}-{run}",
                "topic": TOPIC,
                "scheduled_start_at": (datetime.now(UTC) + timedelta(days=days)).isoformat(),
                "duration_minutes": 45,
                "timezone": "Europe/Berlin",
            },
            headers=key,
        )
        assert booked.status_code == 201, booked.text
        sessions[name] = booked.json()
    assert len(live_meetings(await sim_account(migrator_sim, "google_meet", tutor_email))) == 3

    # Zoom's daily budget of one create: the switch moves session b, then waits with c.
    migrator = start_migrator(
        RELINK_MIGRATOR_ZOOM_DAILY_CREATES="1", RELINK_MIGRATOR_CLEANUP_INTERVAL_S="1"
    )

    # a: cancelled while Google is down. The API answers at once; the migrator's deletion
    # fails, backs off and is tried again until Google is back.
    await sim_admin.faults("google_meet", tutor_email, down=True)
    cancel_a = await http.put(
        f"/platform/v1/sessions/sess-a-{run}/status",
        json={"status": "CANCELLED"},
        headers={**key, "Idempotency-Key": f"cancel-a-{run}"},
    )
    assert cancel_a.status_code == 200, cancel_a.text
    assert cancel_a.json()["status"] == "CANCELLED"
    repeat = await http.put(
        f"/platform/v1/sessions/sess-a-{run}/status",
        json={"status": "CANCELLED"},
        headers={**key, "Idempotency-Key": f"cancel-a-{run}"},
    )
    assert (repeat.status_code, repeat.json()) == (200, cancel_a.json())
    clash = await http.put(
        f"/platform/v1/sessions/sess-a-{run}/status",
        json={"status": "COMPLETED"},
        headers={**key, "Idempotency-Key": f"cancel-a-{run}"},
    )
    assert clash.status_code == 409
    wait_for(
        lambda: "could not delete a cancelled session's meeting" in migrator.output(),
        what="the migrator's failed deletion",
    )
    assert len(live_meetings(await sim_account(migrator_sim, "google_meet", tutor_email))) == 3
    async with httpx.AsyncClient(base_url=migrator_sim.base_url) as admin:
        (await admin.delete(f"/_admin/faults/google/{tutor_email}")).raise_for_status()
    wait_for(
        lambda: not meetings_left(engine, [sessions["a"]["relink_id"]]),
        what="session a's meeting deleted",
    )

    # The switch to Zoom: b moves, c waits for tomorrow's budget.
    assert (await connect(http, tutor, "zoom")).status_code == 303

    async def on_zoom() -> bool:
        got = await http.get(f"/platform/v1/sessions/sess-b-{run}", headers=key)
        return bool(got.json()["provider"] == "zoom")

    deadline = datetime.now(UTC) + timedelta(seconds=90)
    while not await on_zoom():
        assert datetime.now(UTC) < deadline, "session b never moved to Zoom"
        await asyncio.sleep(0.2)
    (mail_b_moved,) = wait_for(
        mails_to(tutor_mail, students["b"], "moved to Zoom"), what="b's move email"
    )
    assert calendar_of(mail_b_moved)["method"] == "REQUEST"
    c_now = await http.get(f"/platform/v1/sessions/sess-c-{run}", headers=key)
    assert c_now.json()["provider"] == "google_meet"  # the switch is still under way

    for name in ("b", "c"):
        cancelled = await http.put(
            f"/platform/v1/sessions/sess-{name}-{run}/status",
            json={"status": "CANCELLED"},
            headers={**key, "Idempotency-Key": f"cancel-{name}-{run}"},
        )
        assert cancelled.status_code == 200, cancelled.text

    ids = [s["relink_id"] for s in sessions.values()]
    wait_for(lambda: not meetings_left(engine, ids), what="every cancelled meeting deleted")

    async def live_anywhere() -> list[Any]:
        google = live_meetings(await sim_account(migrator_sim, "google_meet", tutor_email))
        zoom = live_meetings(await sim_account(migrator_sim, "zoom", tutor_email))
        return google + zoom

    deadline = datetime.now(UTC) + timedelta(seconds=60)
    while await live_anywhere():
        assert datetime.now(UTC) < deadline, await live_anywhere()
        await asyncio.sleep(0.2)

    # Each student: one cancellation, its calendar CANCEL of the same UID, a higher SEQUENCE.
    for name, sequence in (("a", 1), ("b", 2), ("c", 1)):
        (mail,) = wait_for(
            mails_to(tutor_mail, students[name], "is cancelled"), what=f"{name}'s cancellation"
        )
        assert TOPIC in mail.subject
        calendar = calendar_of(mail)
        assert calendar["method"] == "CANCEL"
        (event,) = calendar.walk("VEVENT")
        assert str(event["uid"]) == f"{sessions[name]['relink_id']}@relink.invalid"
        assert event["sequence"] == sequence
        assert str(event["status"]) == "CANCELLED"
        assert event.decoded("dtstart") == datetime.fromisoformat(
            sessions[name]["scheduled_start_at"]
        ).replace(microsecond=0)
    with engine.connect() as conn:
        audited = conn.execute(
            text(
                "SELECT session_id, outcome FROM audit_log "
                "WHERE event_type = 'session.cancelled' AND tutor_id = :t"
            ),
            {"t": tutor_id},
        ).all()
    assert sorted(str(r.session_id) for r in audited) == sorted(ids)
    assert {r.outcome for r in audited} == {"cancelled"}
    for name in students:
        assert len(mails_to(tutor_mail, students[name], "is cancelled")()) == 1
