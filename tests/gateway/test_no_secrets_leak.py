"""Tokens the providers issue never show up in logs, pages, API answers or outbox rows."""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlalchemy import Engine, text

from devtools.provider_sim.server import SimHandle
from tests.gateway.conftest import People, callback, connect, consent, start, switch_id_of


async def test_no_token_in_logs_pages_apis_or_events(
    http: httpx.AsyncClient,
    people: People,
    engine: Engine,
    sim: SimHandle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    tutor, student = people("tutor"), people("student")
    seen: list[str] = []
    first = await connect(http, tutor, "zoom")
    seen.append((await http.get(first.headers["location"], headers=tutor.cookies)).text)
    switched = await connect(http, tutor, "google_meet")
    switch_id = switch_id_of(switched)
    seen.append((await http.get(switched.headers["location"], headers=tutor.cookies)).text)
    for path in ("/api/connection", "/api/switches", f"/api/switches/{switch_id}"):
        seen.append((await http.get(path, headers=tutor.headers)).text)
    booking = await http.post(
        "/api/bookings",
        headers=tutor.headers,
        json={
            "student_id": str(student.id),
            "topic": "t",
            "scheduled_start_at": "2031-01-01T10:00:00+00:00",
            "duration_minutes": 30,
        },
    )
    assert booking.status_code == 201, booking.text
    seen.append(booking.text)
    # a failed exchange logs the provider's error: it must not carry the code's tokens either
    back = await consent(await start(http, tutor, "zoom"), email=tutor.email)
    async with httpx.AsyncClient(base_url=sim.base_url) as admin:
        (await admin.put("/_admin/faults/zoom", json={"down": True})).raise_for_status()
        seen.append((await callback(http, tutor, back)).text)
        issued = (await admin.get("/_admin/issued-tokens")).json()["tokens"]
    with engine.connect() as conn:
        seen.extend(
            str(row) for row in conn.execute(text("SELECT payload, headers FROM outbox")).all()
        )
    assert len(issued) >= 4
    haystack = "\n".join(seen) + "\n" + caplog.text
    leaked = [token for token in issued if token in haystack]
    assert leaked == []
