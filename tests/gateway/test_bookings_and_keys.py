"""Bookings at the current provider (also while a switch commits), tokens at rest and rotation,
and the switch's event on the real Kafka topic."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from confluent_kafka import Consumer
from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session

from devtools.provider_sim.server import SimHandle
from services.core import events
from services.core.db.models import Booking, Connection, OAuthState
from services.core.db.models import Session as SessionRow
from services.core.keys_cli import rotate_tokens
from services.core.tokens import TokenCipher, TokenDecryptError, generate_key
from services.oauth_gateway.adapters.db import GatewayStore
from services.oauth_gateway.errors import ConnectionUnreadable
from services.oauth_gateway.settings import GatewaySettings
from services.oauth_gateway.usecases.tutors import Gateway
from tests.gateway.conftest import People, callback, connect, consent, start, switch_id_of


def booking(student_id: uuid.UUID, *, days: int = 3) -> dict[str, object]:
    return {
        "student_id": str(student_id),
        "topic": "Linear algebra",
        "scheduled_start_at": (datetime.now(UTC) + timedelta(days=days)).isoformat(),
        "duration_minutes": 45,
        "timezone": "Europe/Paris",
    }


async def sim_account(sim: SimHandle, provider: str, email: str) -> dict[str, Any]:
    name = {"zoom": "zoom", "google_meet": "google"}[provider]
    async with httpx.AsyncClient(base_url=sim.base_url) as admin:
        response = await admin.get(f"/_admin/accounts/{name}/{email}")
        response.raise_for_status()
        account: dict[str, Any] = response.json()
        return account


def live_meetings(account: dict[str, Any]) -> list[dict[str, Any]]:
    meetings = account.get("meetings", [])
    return [m for m in meetings if not m.get("deleted")]


async def test_booking_gets_a_meeting_at_the_current_provider(
    http: httpx.AsyncClient, people: People, sim: SimHandle
) -> None:
    tutor, student = people("tutor"), people("student")
    no_connection = await http.post(
        "/api/bookings", json=booking(student.id), headers=tutor.headers
    )
    assert no_connection.status_code == 409
    await connect(http, tutor, "zoom")
    response = await http.post("/api/bookings", json=booking(student.id), headers=tutor.headers)
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["provider"] == "zoom" and session["join_url"]
    assert len(live_meetings(await sim_account(sim, "zoom", tutor.email))) == 1
    theirs = (await http.get("/api/student/sessions", headers=student.headers)).json()
    assert [s["join_url"] for s in theirs] == [session["join_url"]]


async def test_booking_with_an_unknown_time_zone_is_refused_and_makes_nothing(
    http: httpx.AsyncClient, people: People, sim: SimHandle, engine: Engine
) -> None:
    """Zoom and Google take IANA zone names only: the gateway refuses the booking (422, naming
    the zone) before any meeting is requested, and no session row is written."""
    tutor, student = people("tutor"), people("student")
    await connect(http, tutor, "zoom")
    bad = {**booking(student.id), "timezone": "Europe/Atlantis"}
    response = await http.post("/api/bookings", json=bad, headers=tutor.headers)
    assert response.status_code == 422, response.text
    assert "Europe/Atlantis" in response.text
    assert live_meetings(await sim_account(sim, "zoom", tutor.email)) == []
    with Session(engine) as db:
        rows = db.scalars(select(SessionRow).where(SessionRow.tutor_id == tutor.id)).all()
    assert rows == []


async def test_booking_in_the_past_is_refused_and_makes_nothing(
    http: httpx.AsyncClient, people: People, sim: SimHandle, engine: Engine
) -> None:
    """A session that started two days ago cannot be booked: a clear 422 naming the field,
    no meeting requested at the provider, no booking or session row written."""
    tutor, student = people("tutor"), people("student")
    await connect(http, tutor, "zoom")
    response = await http.post(
        "/api/bookings", json=booking(student.id, days=-2), headers=tutor.headers
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert "scheduled_start_at" in body["detail"] and "past" in body["detail"]
    zoom = await sim_account(sim, "zoom", tutor.email)
    assert zoom.get("create_calls", 0) == 0 and live_meetings(zoom) == []
    with Session(engine) as db:
        sessions = db.scalars(select(SessionRow).where(SessionRow.tutor_id == tutor.id)).all()
        bookings = db.scalars(select(Booking).where(Booking.tutor_id == tutor.id)).all()
    assert (sessions, bookings) == ([], [])


async def test_booking_while_a_switch_commits_lands_on_the_new_provider(
    http: httpx.AsyncClient, people: People, sim: SimHandle, engine: Engine
) -> None:
    """The meeting is slow at Zoom; a switch to Google commits meanwhile: the booking re-checks
    the locked connection row and makes its meeting at Google instead."""
    tutor, student = people("tutor"), people("student")
    await connect(http, tutor, "zoom")
    back = await consent(await start(http, tutor, "google_meet"), email=tutor.email)
    async with httpx.AsyncClient(base_url=sim.base_url) as admin:
        (await admin.put("/_admin/faults/zoom", json={"latency_ms": 3000})).raise_for_status()
    book = asyncio.create_task(
        http.post("/api/bookings", json=booking(student.id), headers=tutor.headers)
    )
    await asyncio.sleep(0.3)
    switch = await callback(http, tutor, back)
    assert switch_id_of(switch) is not None
    response = await book
    assert response.status_code == 201, response.text
    assert response.json()["provider"] == "google_meet"
    with engine.connect() as conn:
        provider = conn.scalar(
            select(SessionRow.provider).where(SessionRow.id == uuid.UUID(response.json()["id"]))
        )
    assert provider == "google_meet"
    zoom = await sim_account(sim, "zoom", tutor.email)
    assert zoom["create_calls"] == 1  # the race happened: a Zoom meeting was made first...
    assert live_meetings(zoom) == []  # ...and deleted once the switch was seen


async def test_ciphertext_moved_to_another_row_does_not_decrypt(
    http: httpx.AsyncClient, people: People, engine: Engine, gateway: Gateway
) -> None:
    a, b = people("tutor"), people("tutor")
    await connect(http, a, "zoom")
    await connect(http, b, "zoom")
    store: GatewayStore = gateway.store
    assert store.connection_snapshot(b.id) is not None
    with engine.begin() as conn:
        stolen = conn.scalar(
            select(Connection.access_token_encrypted).where(Connection.tutor_id == a.id)
        )
        conn.execute(
            update(Connection)
            .where(Connection.tutor_id == b.id)
            .values(access_token_encrypted=stolen)
        )
        # and across columns of one row
        refresh = conn.scalar(
            select(Connection.refresh_token_encrypted).where(Connection.tutor_id == a.id)
        )
        conn.execute(
            update(Connection)
            .where(Connection.tutor_id == a.id)
            .values(access_token_encrypted=refresh)
        )
    for tutor in (a, b):
        # The gateway's answer is "connect again" (409); the cause is the cipher's refusal.
        with pytest.raises(ConnectionUnreadable) as refused:
            store.connection_snapshot(tutor.id)
        assert isinstance(refused.value.__cause__, TokenDecryptError)


async def test_rotation_reencrypts_everything_and_old_keys_retire(
    http: httpx.AsyncClient,
    people: People,
    engine: Engine,
    gateway_settings: GatewaySettings,
    relink_env: dict[str, str],
) -> None:
    tutor = people("tutor")
    await connect(http, tutor, "zoom")
    await connect(http, tutor, "google_meet")  # fills previous_* too
    await start(http, tutor, "zoom")  # an unused state with its verifier
    old = gateway_settings.token_keys
    new = generate_key("k2")
    with Session(engine) as s:
        before = s.scalars(select(Connection).where(Connection.tutor_id == tutor.id)).one()
        assert before.previous_refresh_token_encrypted is not None
        plain = TokenCipher.from_spec(old).decrypt(
            before.previous_refresh_token_encrypted,
            tutor_id=tutor.id,
            field="previous_refresh_token",
        )
    # the CLI, as an operator runs it, with the new key last
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "keys", "rotate"],
        env={**relink_env, "RELINK_TOKEN_KEYS": f"{old},{new}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "k2" in done.stdout
    assert "token" not in done.stderr.lower() or "relink_token_keys" in done.stderr.lower()
    retired = TokenCipher.from_spec(new)  # only the new key
    with Session(engine) as s:
        row = s.scalars(select(Connection).where(Connection.tutor_id == tutor.id)).one()
        for column, field in (
            ("access_token_encrypted", "access_token"),
            ("refresh_token_encrypted", "refresh_token"),
            ("previous_access_token_encrypted", "previous_access_token"),
            ("previous_refresh_token_encrypted", "previous_refresh_token"),
        ):
            blob = getattr(row, column)
            assert retired.key_id_of(blob) == "k2"
            retired.decrypt(blob, tutor_id=tutor.id, field=field)
        assert row.previous_refresh_token_encrypted is not None
        assert (
            retired.decrypt(
                row.previous_refresh_token_encrypted,
                tutor_id=tutor.id,
                field="previous_refresh_token",
            )
            == plain
        )
        for state in s.scalars(select(OAuthState)):
            retired.decrypt(state.code_verifier_encrypted, tutor_id=tutor.id, field="code_verifier")
    again = rotate_tokens(gateway_settings.database_url, TokenCipher.from_spec(f"{old},{new}"))
    assert again.total == 0 and again.current >= 5


async def test_switch_event_reaches_the_topic(
    http: httpx.AsyncClient,
    people: People,
    relink_env: dict[str, str],
    gateway_settings: GatewaySettings,
    engine: Engine,
) -> None:
    """The relay publishes the gateway's outbox row; the event on Kafka is the switch."""
    tutor = people("tutor")
    await connect(http, tutor, "zoom")
    switch_id = switch_id_of(await connect(http, tutor, "google_meet"))
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "relay", "--until-idle", "--idle-seconds", "0"],
        env=relink_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM outbox WHERE published_at IS NULL")) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": gateway_settings.kafka_bootstrap_servers,
            "group.id": f"gw-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([gateway_settings.topic_provider_switched])
    found = None
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while found is None and asyncio.get_running_loop().time() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            event = events.parse_message(
                key=message.key(),
                value=message.value(),
                # a consumed message's header values are bytes (str only when producing)
                headers=cast("list[tuple[str, bytes | None]] | None", message.headers()),
            )
            if event.data.get("switch_id") == str(switch_id):
                found = (message.key(), event)
    finally:
        consumer.close()
    assert found is not None
    key, event = found
    assert key == str(tutor.id).encode()
    assert event.type == "provider.switched"
    assert event.data["from_provider"] == "zoom" and event.data["to_provider"] == "google_meet"
    # an absolute URI under RELINK_EVENTS_SOURCE_BASE (issue 20), no longer `/relink/oauth-gateway`
    assert event.source == f"{events.SOURCE_BASE_URI}/oauth-gateway"
