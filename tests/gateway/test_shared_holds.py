"""A 429's Retry-After holds back the account in every process, not only the one that got it.

Two gateway replicas (two apps, two sets of provider clients, one PostgreSQL),
as behind a load balancer: replica A's booking gets a 429 with a Retry-After
longer than a request may wait in place; a booking on replica B right after
must not call the provider before the Retry-After has passed. The simulator
counts every API call of the account inside the wait (`early_calls`). The
migrator shares the same holds (`services/core/db/holds.py`), paced as the
same tutor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import Engine, text

from devtools.provider_sim.server import SimHandle
from services.oauth_gateway.bootstrap import build_gateway
from services.oauth_gateway.entrypoint import create_app
from services.oauth_gateway.settings import GatewaySettings
from tests.gateway.conftest import BASE, People, connect, provider_settings_for
from tests.gateway.test_bookings_and_keys import booking, live_meetings, sim_account


@pytest.fixture
async def replica_b(
    gateway_settings: GatewaySettings, sim: SimHandle
) -> AsyncIterator[httpx.AsyncClient]:
    """A second gateway on the same database, with its own provider clients."""
    gateway = build_gateway(gateway_settings, provider_settings=provider_settings_for(sim))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(gateway=gateway)),
            base_url=BASE,
            timeout=30,
        ) as client:
            yield client
    finally:
        await gateway.aclose()


async def test_a_retry_after_one_replica_got_holds_back_the_other(
    http: httpx.AsyncClient,
    replica_b: httpx.AsyncClient,
    people: People,
    sim: SimHandle,
    engine: Engine,
) -> None:
    tutor, student = people("tutor"), people("student")
    await connect(http, tutor, "zoom")
    # Longer than the 2 s the test settings let a request wait in place.
    async with httpx.AsyncClient(base_url=sim.base_url) as admin:
        fault = {"burst_429": 1, "retry_after_s": 4}
        (await admin.put(f"/_admin/faults/zoom/{tutor.email}", json=fault)).raise_for_status()

    first = await http.post("/api/bookings", json=booking(student.id), headers=tutor.headers)
    second = await replica_b.post(
        "/api/bookings", json=booking(student.id, days=4), headers=tutor.headers
    )

    account = await sim_account(sim, "zoom", tutor.email)
    assert account["early_calls"] == 0, "replica B called inside replica A's Retry-After"
    # Neither made a meeting; both said when to come back.
    assert (first.status_code, second.status_code) == (503, 503), (first.text, second.text)
    assert int(second.headers["retry-after"]) >= 1
    assert live_meetings(account) == []
    with engine.connect() as conn:
        held = conn.scalar(
            text("SELECT count(*) FROM provider_holds WHERE provider = 'zoom' AND account = :a"),
            {"a": str(tutor.id)},
        )
    assert held == 1
