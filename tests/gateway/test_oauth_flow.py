"""The OAuth round trip for both providers: first connection, switches both ways, reconnect."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from services.core.db.models import Connection, Outbox, ProviderSwitch, SwitchRequest
from services.core.tokens import TokenCipher
from services.oauth_gateway.settings import GatewaySettings
from tests.gateway.conftest import People, connect, switch_id_of, written


async def test_first_connection_switch_both_ways_and_reconnect(
    http: httpx.AsyncClient, people: People, engine: Engine, gateway_settings: GatewaySettings
) -> None:
    tutor = people("tutor")

    first = await connect(http, tutor, "zoom")
    assert first.status_code == 303
    assert first.headers["location"] == "/tutor/video-setup?success=true"
    assert written(engine, tutor.id).switches == 0
    assert written(engine, tutor.id).outbox == 0

    to_meet = await connect(http, tutor, "google_meet")
    assert to_meet.status_code == 303
    meet_switch = switch_id_of(to_meet)
    assert to_meet.headers["location"] == f"/tutor/video-setup?success=true&switch={meet_switch}"

    to_zoom = await connect(http, tutor, "zoom")
    zoom_switch = switch_id_of(to_zoom)
    assert zoom_switch is not None and zoom_switch != meet_switch

    again = await connect(http, tutor, "zoom")  # same provider: fresh tokens, no switch
    assert again.headers["location"] == "/tutor/video-setup?success=true"

    with engine.connect() as conn:
        switches = conn.execute(
            select(SwitchRequest)
            .where(SwitchRequest.tutor_id == tutor.id)
            .order_by(SwitchRequest.generation)
        ).all()
        assert [(s.from_provider, s.to_provider, s.generation) for s in switches] == [
            ("zoom", "google_meet", 2),
            ("google_meet", "zoom", 3),
        ]
        # The gateway writes the requests only; the migrator makes the progress rows.
        progress = select(func.count()).where(ProviderSwitch.tutor_id == tutor.id)
        assert conn.scalar(progress) == 0
        outbox = conn.execute(
            select(Outbox).where(Outbox.aggregate_id == str(tutor.id)).order_by(Outbox.id)
        ).all()
        assert [o.event_type for o in outbox] == ["provider.switched", "provider.switched"]
        assert [o.payload["switch_id"] for o in outbox] == [str(meet_switch), str(zoom_switch)]
        assert outbox[1].payload["generation"] == 3
        assert outbox[0].topic == f"{gateway_settings.topic_prefix}provider.switched"
        assert "token" not in str(outbox[0].payload).lower().replace("tutor", "")
    with Session(engine) as orm:
        connection = orm.scalars(select(Connection).where(Connection.tutor_id == tutor.id)).one()
    assert connection.provider == "zoom"
    assert connection.generation == 3
    assert connection.previous_provider == "google_meet"
    assert connection.access_token_encrypted is not None
    assert connection.previous_access_token_encrypted is not None
    cipher: TokenCipher = gateway_settings.token_cipher()
    access = cipher.decrypt(
        connection.access_token_encrypted, tutor_id=tutor.id, field="access_token"
    )
    previous = cipher.decrypt(
        connection.previous_access_token_encrypted,
        tutor_id=tutor.id,
        field="previous_access_token",
    )
    assert access and previous and access != previous
    assert access.encode() not in connection.access_token_encrypted


async def test_switch_status_and_history_api(http: httpx.AsyncClient, people: People) -> None:
    tutor = people("tutor")
    await connect(http, tutor, "google_meet")
    switch_id = switch_id_of(await connect(http, tutor, "zoom"))

    status = await http.get(f"/api/switches/{switch_id}", headers=tutor.headers)
    assert status.status_code == 200
    body = status.json()
    assert body["state"] == "PENDING"
    assert body["from_provider"] == "google_meet" and body["to_provider"] == "zoom"
    assert body["message"]["kind"] == "in_progress"
    assert body["can_roll_back"] is True

    history = await http.get("/api/switches", headers=tutor.headers)
    assert [h["id"] for h in history.json()] == [str(switch_id)]
    connection = await http.get("/api/connection", headers=tutor.headers)
    assert connection.json()["provider"] == "zoom"
    assert "token" not in connection.text.lower()
    assert uuid.UUID(body["id"]) == switch_id
