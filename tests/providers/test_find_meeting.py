"""Finding the meeting an earlier create made: Zoom by its agenda marker, Google by event id."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx

from devtools.provider_sim.server import SimHandle
from services.providers import MeetingRequest, ProviderClient, meeting_marker
from tests.providers.conftest import SimAdmin, connect

START = datetime(2031, 3, 4, 15, 30, tzinfo=UTC)


def booking(session_id: str, *, switch_id: str = "switch-1", hours: int = 0) -> MeetingRequest:
    return MeetingRequest(
        switch_id=switch_id,
        session_id=session_id,
        topic="Algebra with Ada",
        start_time=START + timedelta(hours=hours),
        duration_min=45,
    )


async def test_find_meeting_after_create_only(
    client: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(client, email)
    request = booking("session-1")
    assert await client.find_meeting(tokens.access_token, request) is None

    made = await client.create_meeting(tokens.access_token, request)

    found = await client.find_meeting(tokens.access_token, request)
    assert found is not None
    assert (found.external_id, found.join_url, found.start_time) == (
        made.external_id,
        made.join_url,
        made.start_time,
    )
    # Another switch of the same session is another meeting.
    assert (
        await client.find_meeting(tokens.access_token, booking("session-1", switch_id="s2")) is None
    )
    await client.delete_meeting(tokens.access_token, made.external_id)
    assert await client.find_meeting(tokens.access_token, request) is None


async def test_zoom_marker_is_in_the_agenda_and_exact(
    sim_zoom: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(sim_zoom, email)
    await sim_zoom.create_meeting(tokens.access_token, booking("session-10"))

    [meeting] = (await admin.account("zoom", email))["meetings"]
    assert meeting_marker("switch-1", "session-10") in meeting["agenda"]
    assert tokens.access_token not in meeting["agenda"]
    # "session-1" is a prefix of "session-10": the marker's brackets keep them apart.
    assert await sim_zoom.find_meeting(tokens.access_token, booking("session-1")) is None


async def test_zoom_find_pages_through_more_than_300_meetings(
    sim_zoom: ProviderClient, sim: SimHandle, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(sim_zoom, email)
    await admin.faults("zoom", email, daily_quota=1000)  # past Zoom's 100 creates a day
    count = 305
    for first in range(0, count, 25):
        await asyncio.gather(
            *(
                sim_zoom.create_meeting(tokens.access_token, booking(f"s-{i}", hours=i))
                for i in range(first, min(first + 25, count))
            )
        )

    # The wire shape: 300 a page at most, an opaque token, "" on the last page.
    auth = {"Authorization": f"Bearer {tokens.access_token}"}
    async with httpx.AsyncClient(base_url=sim.zoom_base, headers=auth, timeout=10) as http:
        first_page = (
            await http.get("/v2/users/me/meetings", params={"type": "scheduled", "page_size": 1000})
        ).json()
        assert first_page["page_size"] == 300
        assert first_page["total_records"] == count
        assert len(first_page["meetings"]) == 300
        assert first_page["next_page_token"]
        assert {"id", "topic", "start_time", "join_url", "agenda"} <= set(first_page["meetings"][0])
        last_page = (
            await http.get(
                "/v2/users/me/meetings",
                params={"page_size": 300, "next_page_token": first_page["next_page_token"]},
            )
        ).json()
        assert len(last_page["meetings"]) == count - 300
        assert last_page["next_page_token"] == ""
        listed = [m["id"] for m in first_page["meetings"] + last_page["meetings"]]
        assert len(set(listed)) == count

    # The latest meeting sorts onto the second page: found there.
    found = await sim_zoom.find_meeting(tokens.access_token, booking(f"s-{count - 1}", hours=0))
    assert found is not None
    assert found.start_time == START + timedelta(hours=count - 1)
    assert await sim_zoom.find_meeting(tokens.access_token, booking(f"s-{count}")) is None
