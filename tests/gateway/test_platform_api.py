"""The service API, played as the platform's backend would (issue 19): no SQL writes.

An API key from `relink keys api create` (the real command), users and
sessions through `/platform/v1` with `Idempotency-Key`s, the tutor connecting
Zoom in their own browser (the OAuth round trip against the simulator), and
the meetings checked at the simulator.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, func, select

from devtools.provider_sim.server import SimHandle
from services.core.db.models import Outbox, User
from services.core.db.models import Session as SessionRow
from services.oauth_gateway.adapters.web.auth import issue_token
from services.oauth_gateway.settings import GatewaySettings
from tests.gateway.conftest import Person, connect
from tests.gateway.test_bookings_and_keys import live_meetings, sim_account


def relink(relink_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env={**os.environ, **relink_env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def new_key(relink_env: dict[str, str], *scopes: str) -> str:
    args = ["keys", "api", "create", "--name", "platform backend"]
    for scope in scopes:
        args += ["--scope", scope]
    made = relink(relink_env, *args)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def bearer(key: str, idempotency: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if idempotency:
        headers["Idempotency-Key"] = idempotency
    return headers


def session_body(sid: str, tutor: str, student: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "tutor": tutor,
        "student": student,
        "topic": "Organic chemistry",
        "scheduled_start_at": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
        "duration_minutes": 60,
        "timezone": "Europe/Berlin",
        **changes,
    }


async def test_the_platform_keeps_users_and_sessions_true_through_the_api(
    http: httpx.AsyncClient,
    relink_env: dict[str, str],
    engine: Engine,
    sim: SimHandle,
    gateway_settings: GatewaySettings,
) -> None:
    key = new_key(relink_env, "users:write", "users:read", "sessions:write", "sessions:read")
    run = uuid.uuid4().hex[:8]
    tutor_id, student_id = f"t-{run}", f"s-{run}"
    tutor_email = f"tutor-{run}@example.com"

    # Users by the platform's own ids: created (201), then updated (200).
    made = await http.put(
        f"/platform/v1/users/{tutor_id}",
        json={"role": "tutor", "name": "Ada", "email": tutor_email, "timezone": "Europe/Berlin"},
        headers=bearer(key),
    )
    assert made.status_code == 201, made.text
    again = await http.put(
        f"/platform/v1/users/{tutor_id}",
        json={"role": "tutor", "name": "Ada L.", "email": tutor_email, "timezone": "Europe/Berlin"},
        headers=bearer(key),
    )
    assert again.status_code == 200 and again.json()["name"] == "Ada L."
    assert (
        await http.put(
            f"/platform/v1/users/{student_id}",
            json={"role": "student", "name": "Bo", "email": f"student-{run}@example.com"},
            headers=bearer(key),
        )
    ).status_code == 201
    read = await http.get(f"/platform/v1/users/{tutor_id}", headers=bearer(key))
    assert read.json()["role"] == "tutor" and read.json()["timezone"] == "Europe/Berlin"

    # The tutor connects Zoom in their own browser.
    relink_tutor = uuid.UUID(made.json()["relink_id"])
    token = issue_token(
        relink_tutor,
        role="tutor",
        secret=gateway_settings.session_secret.get_secret_value(),
        ttl_s=3600,
    )
    assert (
        await connect(http, Person(relink_tutor, tutor_email, "tutor", token), "zoom")
    ).status_code == 303

    # A session booked with an Idempotency-Key: one meeting, however often it is sent.
    body = session_body(f"sess-{run}", tutor_id, student_id)
    first = await http.post("/platform/v1/sessions", json=body, headers=bearer(key, "book-1"))
    assert first.status_code == 201, first.text
    assert first.json()["provider"] == "zoom" and first.json()["join_url"].startswith("http")
    repeat = await http.post("/platform/v1/sessions", json=body, headers=bearer(key, "book-1"))
    assert (repeat.status_code, repeat.json()) == (201, first.json())
    other = dict(body, topic="Something else")
    clash = await http.post("/platform/v1/sessions", json=other, headers=bearer(key, "book-1"))
    assert clash.status_code == 409 and clash.json()["error"] == "Conflict"
    assert len(live_meetings(await sim_account(sim, "zoom", tutor_email))) == 1
    with engine.connect() as conn:
        sessions = conn.scalar(
            select(func.count()).select_from(SessionRow).where(SessionRow.tutor_id == relink_tutor)
        )
    assert sessions == 1

    # Its life: forward only; CANCELLED writes a `session.cancelled` with the status. The
    # gateway calls no provider: the migrator deletes the meeting, retrying until it is gone
    # (tests/migrator/test_platform_cancel.py).
    sid = f"sess-{run}"
    opened = await http.put(
        f"/platform/v1/sessions/{sid}/status", json={"status": "JOIN_OPEN"}, headers=bearer(key)
    )
    assert opened.status_code == 200 and opened.json()["status"] == "JOIN_OPEN"
    cancelled = await http.put(
        f"/platform/v1/sessions/{sid}/status",
        json={"status": "CANCELLED"},
        headers=bearer(key, "cancel-1"),
    )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    (meeting,) = live_meetings(await sim_account(sim, "zoom", tutor_email))
    with engine.connect() as conn:
        events = conn.execute(
            select(Outbox.event_type, Outbox.payload).where(
                Outbox.aggregate_id == str(relink_tutor), Outbox.event_type == "session.cancelled"
            )
        ).all()
    (event,) = events
    assert event.payload["session_id"] == first.json()["relink_id"]
    assert event.payload["provider"] == "zoom"
    assert event.payload["meeting_external_id"] == str(meeting["id"])
    assert event.payload["previous_status"] == "JOIN_OPEN"
    again = await http.put(
        f"/platform/v1/sessions/{sid}/status",
        json={"status": "CANCELLED"},
        headers=bearer(key),
    )
    assert again.status_code == 200  # the same status again: nothing changes, no second event
    with engine.connect() as conn:
        assert (
            conn.scalar(
                select(func.count())
                .select_from(Outbox)
                .where(
                    Outbox.aggregate_id == str(relink_tutor),
                    Outbox.event_type == "session.cancelled",
                )
            )
            == 1
        )
    back = await http.put(
        f"/platform/v1/sessions/{sid}/status", json={"status": "JOIN_OPEN"}, headers=bearer(key)
    )
    assert back.status_code == 409
    got = await http.get(f"/platform/v1/sessions/{sid}", headers=bearer(key))
    assert got.json()["status"] == "CANCELLED" and got.json()["tutor"] == tutor_id


async def test_keys_scopes_and_bad_input_change_nothing(
    http: httpx.AsyncClient, relink_env: dict[str, str], engine: Engine
) -> None:
    reader = new_key(relink_env, "users:read")
    run = uuid.uuid4().hex[:8]
    user = {"role": "student", "name": "Cy", "email": f"cy-{run}@example.com"}

    assert (await http.put(f"/platform/v1/users/u-{run}", json=user)).status_code == 401
    wrong = await http.put(
        f"/platform/v1/users/u-{run}", json=user, headers=bearer("rk_nothere_secret")
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "NotSignedIn"
    scoped = await http.put(f"/platform/v1/users/u-{run}", json=user, headers=bearer(reader))
    assert scoped.status_code == 403

    writer = new_key(relink_env, "users:write")
    for bad in (
        {**user, "email": "not-an-email"},
        {**user, "role": "admin"},
        {**user, "name": "Cy\x00"},
        {**user, "timezone": "Mars/Olympus"},
    ):
        refused = await http.put(f"/platform/v1/users/u-{run}", json=bad, headers=bearer(writer))
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == "invalid_request" and refused.json()["fields"]
    odd_id = await http.put("/platform/v1/users/has%20space", json=user, headers=bearer(writer))
    assert odd_id.status_code == 422
    with engine.connect() as conn:
        assert (
            conn.scalar(select(func.count()).select_from(User).where(User.email == user["email"]))
            == 0
        )

    # A role never changes; an email another user has is a 409, not a 503.
    assert (
        await http.put(f"/platform/v1/users/u-{run}", json=user, headers=bearer(writer))
    ).status_code == 201
    turned = await http.put(
        f"/platform/v1/users/u-{run}", json={**user, "role": "tutor"}, headers=bearer(writer)
    )
    assert turned.status_code == 409
    taken = await http.put(f"/platform/v1/users/v-{run}", json=user, headers=bearer(writer))
    assert taken.status_code == 409, taken.text

    # A revoked key stops at once.
    key_id = "_".join(writer.split("_")[:2])
    revoked = relink(relink_env, "keys", "api", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    listed = relink(relink_env, "keys", "api", "list")
    assert key_id in listed.stdout and "revoked" in listed.stdout
    assert writer not in listed.stdout  # never the secret
    after = await http.put(f"/platform/v1/users/u-{run}", json=user, headers=bearer(writer))
    assert after.status_code == 401
