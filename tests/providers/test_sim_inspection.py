"""The simulator's inspection pages: every live meeting, every token it issued."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from devtools.provider_sim.server import SimHandle
from services.providers import MeetingRequest, ProviderClient
from tests.providers.conftest import SimAdmin, connect


async def test_meetings_page_and_issued_tokens(
    client: ProviderClient, sim: SimHandle, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(client, email)
    meeting = await client.create_meeting(
        tokens.access_token,
        MeetingRequest(
            switch_id="sw-1",
            session_id="s-1",
            topic="Geometry with Grace",
            start_time=datetime(2031, 5, 6, 9, 0, tzinfo=UTC),
            duration_min=45,
        ),
    )
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=10) as http:
        listing = (await http.get("/_admin/meetings")).json()
        page = await http.get("/_admin/meetings", headers={"accept": "text/html"})
        issued = (await http.get("/_admin/issued-tokens")).json()["tokens"]
    [account] = [a for a in listing["accounts"] if a["email"] == email]
    assert [str(m["id"]) for m in account["meetings"]] == [meeting.external_id]
    assert page.headers["content-type"].startswith("text/html")
    assert "Geometry with Grace" in page.text
    assert meeting.join_url is not None and meeting.join_url in page.text
    assert tokens.access_token in issued
    assert tokens.refresh_token in issued
