"""Every bad callback gets a clear page and writes nothing: connection, switches, outbox."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import Engine, text

from devtools.provider_sim.server import SimHandle
from tests.gateway.conftest import (
    People,
    Person,
    callback,
    connect,
    consent,
    start,
    switch_id_of,
    written,
)


@pytest.fixture
async def connected(http: httpx.AsyncClient, people: People) -> Person:
    """A tutor already on Zoom (so "previous connection untouched" means something)."""
    tutor = people("tutor")
    assert (await connect(http, tutor, "zoom")).status_code == 303
    return tutor


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return f"{parts.path}?{urlencode(query)}"


async def rejected(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 400, response.text
    assert f'data-reason="{reason}"' in response.text
    assert "Your previous video provider connection is unchanged." in response.text


async def test_unknown_state(http: httpx.AsyncClient, connected: Person, engine: Engine) -> None:
    before = written(engine, connected.id)
    response = await http.get(
        "/oauth/google_meet/callback?state=not-ours&code=abc", headers=connected.cookies
    )
    await rejected(response, "state_unknown")
    assert written(engine, connected.id) == before


async def test_missing_state(http: httpx.AsyncClient, connected: Person, engine: Engine) -> None:
    before = written(engine, connected.id)
    response = await http.get("/oauth/google_meet/callback?code=abc", headers=connected.cookies)
    await rejected(response, "state_missing")
    assert written(engine, connected.id) == before


async def test_expired_state(http: httpx.AsyncClient, connected: Person, engine: Engine) -> None:
    back = await consent(await start(http, connected, "google_meet"), email=connected.email)
    with engine.begin() as conn:
        conn.execute(text("UPDATE oauth_states SET expires_at = now() - interval '1 second'"))
    before = written(engine, connected.id)
    await rejected(await callback(http, connected, back), "state_expired")
    assert written(engine, connected.id) == before


async def test_replayed_state(http: httpx.AsyncClient, connected: Person, engine: Engine) -> None:
    back = await consent(await start(http, connected, "google_meet"), email=connected.email)
    assert switch_id_of(await callback(http, connected, back)) is not None
    before = written(engine, connected.id)
    await rejected(await callback(http, connected, back), "state_replayed")
    assert written(engine, connected.id) == before


async def test_another_tutors_state(
    http: httpx.AsyncClient, connected: Person, people: People, engine: Engine
) -> None:
    other = people("tutor")
    await connect(http, other, "zoom")
    back = await consent(await start(http, connected, "google_meet"), email=connected.email)
    before_mine, before_other = written(engine, connected.id), written(engine, other.id)
    await rejected(await callback(http, other, back), "state_other_tutor")
    assert written(engine, other.id) == before_other
    assert written(engine, connected.id) == before_mine
    # the rightful tutor can still finish: the state was not burned by the other one
    assert switch_id_of(await callback(http, connected, back)) is not None


async def test_state_of_another_provider(
    http: httpx.AsyncClient, connected: Person, engine: Engine
) -> None:
    back = await consent(await start(http, connected, "google_meet"), email=connected.email)
    before = written(engine, connected.id)
    wrong = back.replace("/oauth/google_meet/callback", "/oauth/zoom/callback")
    await rejected(await callback(http, connected, wrong), "state_wrong_provider")
    assert written(engine, connected.id) == before


async def test_access_denied(http: httpx.AsyncClient, connected: Person, engine: Engine) -> None:
    back = await consent(
        await start(http, connected, "google_meet"), email=connected.email, decision="deny"
    )
    assert "error=access_denied" in back
    before = written(engine, connected.id)
    response = await callback(http, connected, back)
    await rejected(response, "access_denied")
    assert "You declined access at Google Meet" in response.text
    assert written(engine, connected.id) == before


async def test_token_exchange_refused(
    http: httpx.AsyncClient, connected: Person, engine: Engine
) -> None:
    back = await consent(await start(http, connected, "google_meet"), email=connected.email)
    before = written(engine, connected.id)
    response = await http.get(with_query(back, code="forged-code"), headers=connected.cookies)
    await rejected(response, "token_exchange_failed")
    assert written(engine, connected.id) == before


async def test_provider_down_during_exchange(
    http: httpx.AsyncClient, connected: Person, engine: Engine, sim: SimHandle
) -> None:
    back = await consent(await start(http, connected, "google_meet"), email=connected.email)
    async with httpx.AsyncClient(base_url=sim.base_url) as admin:
        (await admin.put("/_admin/faults/google", json={"down": True})).raise_for_status()
    before = written(engine, connected.id)
    # An outage is not the tutor's fault: 503 and a plain sentence, not the
    # provider's error body and not a 400 "we could not connect" (issue #18).
    response = await callback(http, connected, back)
    assert response.status_code == 503, response.text
    assert 'data-reason="provider_unavailable"' in response.text
    detail = response.text.split('<p id="error-detail">', 1)[1].split("</p>", 1)[0]
    assert detail == (
        "Google Meet is not answering right now; nothing was changed. "
        "Please try again in a few minutes."
    )
    assert written(engine, connected.id) == before


async def test_not_signed_in_or_forged(
    http: httpx.AsyncClient, connected: Person, engine: Engine
) -> None:
    back = await consent(await start(http, connected, "google_meet"), email=connected.email)
    before = written(engine, connected.id)
    parts = urlsplit(back)
    anonymous = await http.get(f"{parts.path}?{parts.query}")
    assert anonymous.status_code == 401
    forged = connected.token[:-4] + "AAAA"
    response = await http.get(
        f"{parts.path}?{parts.query}", headers={"Cookie": f"relink_session={forged}"}
    )
    assert response.status_code == 401
    assert written(engine, connected.id) == before


async def test_failure_after_upsert_rolls_everything_back(
    http: httpx.AsyncClient, connected: Person, engine: Engine
) -> None:
    """A failure injected after the connection update (the outbox insert fails) changes nothing."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION fail_outbox() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'injected outbox failure'; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox "
                "FOR EACH ROW EXECUTE FUNCTION fail_outbox()"
            )
        )
    before = written(engine, connected.id)
    back = await consent(await start(http, connected, "google_meet"), email=connected.email)
    response = await callback(http, connected, back)
    assert response.status_code == 503
    assert "nothing was changed" in response.text
    assert written(engine, connected.id) == before  # same provider, tokens, generation
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER fail_outbox ON outbox"))


async def test_two_concurrent_callbacks_serialize(
    http: httpx.AsyncClient, connected: Person, engine: Engine
) -> None:
    """Two callbacks to Google Meet at once: one switch, the other a reconnect."""
    backs = [
        await consent(await start(http, connected, "google_meet"), email=connected.email)
        for _ in range(2)
    ]
    responses = await asyncio.gather(*(callback(http, connected, b) for b in backs))
    assert all(r.status_code == 303 for r in responses)
    switches = [switch_id_of(r) for r in responses]
    assert sum(s is not None for s in switches) == 1
    after = written(engine, connected.id)
    assert after.switches == 1 and after.outbox == 1
    assert after.connection is not None and after.connection[:2] == ("google_meet", 2)


async def test_two_concurrent_first_connections(
    http: httpx.AsyncClient, people: People, engine: Engine
) -> None:
    """No row to lock yet: the unique index serializes; the later one is a switch."""
    tutor = people("tutor")
    backs = [
        await consent(await start(http, tutor, p), email=tutor.email)
        for p in ("zoom", "google_meet")
    ]
    responses = await asyncio.gather(*(callback(http, tutor, b) for b in backs))
    assert all(r.status_code == 303 for r in responses)
    after = written(engine, tutor.id)
    assert after.switches == 1 and after.outbox == 1
    with engine.connect() as conn:
        to_provider = conn.execute(
            text("SELECT to_provider FROM switch_requests WHERE tutor_id = :t"), {"t": tutor.id}
        ).scalar_one()
    assert after.connection is not None and after.connection[:2] == (to_provider, 2)
