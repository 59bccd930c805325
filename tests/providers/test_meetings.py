"""Creating, reading and deleting meetings at both providers through the simulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from devtools.provider_sim.server import SimHandle
from services.providers import (
    ConferenceFailedError,
    ConferencePendingError,
    InvalidRequestError,
    MeetingRequest,
    ProviderClient,
    build_client,
)
from tests.providers.conftest import SimAdmin, connect, sim_settings


def booking(
    session_id: str = "session-1", *, switch_id: str = "switch-1", minutes: int = 45
) -> MeetingRequest:
    return MeetingRequest(
        switch_id=switch_id,
        session_id=session_id,
        topic="Algebra with Ada",
        start_time=datetime(2031, 3, 4, 15, 30, tzinfo=UTC),
        duration_min=minutes,
        timezone="Europe/Paris",
    )


async def test_create_get_delete(client: ProviderClient, admin: SimAdmin, email: str) -> None:
    tokens = await connect(client, email)

    meeting = await client.create_meeting(tokens.access_token, booking())

    assert meeting.join_url and meeting.external_id
    assert meeting.start_time == datetime(2031, 3, 4, 15, 30, tzinfo=UTC)
    state = await admin.account(client.provider, email)
    assert [str(m["id"]) for m in state["meetings"]] == [meeting.external_id]
    async with httpx.AsyncClient() as browser:
        assert (await browser.get(meeting.join_url)).status_code == 200

    assert await client.get_meeting(tokens.access_token, meeting.external_id) == meeting
    assert await client.delete_meeting(tokens.access_token, meeting.external_id) is True
    assert await client.get_meeting(tokens.access_token, meeting.external_id) is None
    assert await client.delete_meeting(tokens.access_token, meeting.external_id) is False
    assert (await admin.account(client.provider, email))["meetings"] == []


async def test_zoom_meeting_carries_the_booking(
    sim_zoom: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(sim_zoom, email)
    await sim_zoom.create_meeting(tokens.access_token, booking())
    [meeting] = (await admin.account("zoom", email))["meetings"]
    assert meeting["type"] == 2
    assert meeting["topic"] == "Algebra with Ada"
    assert meeting["start_time"] == "2031-03-04T15:30:00Z"
    assert meeting["duration"] == 45
    assert meeting["timezone"] == "Europe/Paris"


async def test_google_retried_create_makes_one_event_and_one_conference(
    sim_google: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(sim_google, email)

    first = await sim_google.create_meeting(tokens.access_token, booking())
    again = await sim_google.create_meeting(tokens.access_token, booking())
    other = await sim_google.create_meeting(tokens.access_token, booking("session-2"))

    assert again == first
    assert other.external_id != first.external_id and other.join_url != first.join_url
    state = await admin.account("google_meet", email)
    assert len(state["meetings"]) == 2
    assert state["conferences"] == 2


async def test_google_repeated_request_id_gets_the_same_conference(
    sim: SimHandle, sim_google: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(sim_google, email)
    body = {
        "start": {"dateTime": "2031-01-01T10:00:00+00:00"},
        "end": {"dateTime": "2031-01-01T11:00:00+00:00"},
        "conferenceData": {
            "createRequest": {
                "requestId": "same-request",
                "conferenceSolutionKey": {"type": "hangoutsMeet"},
            }
        },
    }
    url = f"{sim.google_base}/calendar/v3/calendars/primary/events?conferenceDataVersion=1"
    headers = {"Authorization": f"Bearer {tokens.access_token}"}
    async with httpx.AsyncClient() as http:
        await http.post(url, json=body, headers=headers)
        await http.post(url, json=body, headers=headers)
    assert (await admin.account("google_meet", email))["conferences"] == 1


async def test_google_pending_conference_is_polled_until_ready(
    sim_google: ProviderClient, admin: SimAdmin, email: str
) -> None:
    await admin.faults("google_meet", email, conference_pending_reads=4)
    tokens = await connect(sim_google, email)

    meeting = await sim_google.create_meeting(tokens.access_token, booking())

    assert meeting.join_url and "/meet/" in meeting.join_url


async def test_google_conference_failure_is_typed(
    sim_google: ProviderClient, admin: SimAdmin, email: str
) -> None:
    await admin.faults("google_meet", email, conference_failure=True)
    tokens = await connect(sim_google, email)
    with pytest.raises(ConferenceFailedError):
        await sim_google.create_meeting(tokens.access_token, booking())


async def test_google_conference_pending_too_long_is_retryable(
    sim: SimHandle, admin: SimAdmin, email: str
) -> None:
    # The insert answer and three polls see "pending"; the fifth read succeeds.
    await admin.faults("google_meet", email, conference_pending_reads=5)
    settings = sim_settings(sim, conference_poll_attempts=3)
    async with build_client("google_meet", settings=settings) as google:
        tokens = await connect(google, email)
        with pytest.raises(ConferencePendingError) as caught:
            await google.create_meeting(tokens.access_token, booking())
        assert caught.value.retryable
        # The retry finds the event made the first time and waits for its link.
        meeting = await google.create_meeting(tokens.access_token, booking())
    assert meeting.join_url
    assert len((await admin.account("google_meet", email))["meetings"]) == 1


async def test_invalid_meeting_is_not_retried(
    client: ProviderClient, email: str, notices: list[object]
) -> None:
    tokens = await connect(client, email)
    with pytest.raises(InvalidRequestError) as caught:
        await client.create_meeting(tokens.access_token, booking(minutes=0))
    if client.provider == "zoom":
        # Refused before sending (providers/_limits.py): no HTTP status, Zoom never saw it.
        assert caught.value.status is None
    else:
        assert caught.value.status == 400
    assert not caught.value.retryable
    assert notices == []


async def test_unknown_meeting_is_none(client: ProviderClient, email: str) -> None:
    tokens = await connect(client, email)
    missing = "85012345678" if client.provider == "zoom" else "abcdefghij0123"
    assert await client.get_meeting(tokens.access_token, missing) is None
    assert await client.delete_meeting(tokens.access_token, missing) is False


def test_meeting_request_window() -> None:
    request = booking()
    assert request.start_time + timedelta(minutes=request.duration_min) > request.start_time
