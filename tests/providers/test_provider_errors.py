"""Every error class the migrator acts on, produced by the simulator's faults."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from devtools.provider_sim.faults import IN_FLIGHT_S
from devtools.provider_sim.server import SimHandle, free_port
from services.providers import (
    DailyQuotaExhaustedError,
    MeetingRequest,
    ProviderClient,
    ProviderUnavailableError,
    RateLimitedError,
    RetryNotice,
    UsageLimitedError,
    build_client,
)
from services.providers._ratelimit import next_utc_midnight
from tests.providers.conftest import SimAdmin, connect, sim_settings


def booking(session_id: str = "s-1") -> MeetingRequest:
    return MeetingRequest(
        switch_id="sw-1",
        session_id=session_id,
        topic="Physics",
        start_time=datetime(2031, 5, 6, 9, 0, tzinfo=UTC),
        duration_min=30,
    )


async def test_429_burst_is_waited_out_as_asked(
    client: ProviderClient, admin: SimAdmin, email: str, notices: list[RetryNotice]
) -> None:
    tokens = await connect(client, email)
    await admin.faults(client.provider, email, burst_429=2, retry_after_s=1)

    meeting = await client.create_meeting(tokens.access_token, booking())

    assert meeting.join_url
    assert [n.wait_s for n in notices] == [1.0, 1.0]
    assert all(isinstance(n.error, RateLimitedError) for n in notices)
    assert len((await admin.account(client.provider, email))["meetings"]) == 1


async def test_retry_after_beyond_the_limit_is_handed_back(
    client: ProviderClient, admin: SimAdmin, email: str, notices: list[RetryNotice]
) -> None:
    tokens = await connect(client, email)
    await admin.faults(client.provider, email, burst_429=1, retry_after_s=120)

    with pytest.raises(RateLimitedError) as caught:
        await client.account(tokens.access_token)

    assert caught.value.retry_after_s == 120
    assert notices == []


async def test_the_simulator_counts_a_call_made_inside_a_retry_after(
    client: ProviderClient, admin: SimAdmin, email: str
) -> None:
    """The soak's and pacing tests' witness (`early_calls`) sees a client that does not wait.

    Calls made outside an `AuthorizedSession` are not paced, so the second one
    goes out at once; the simulator must count it.
    """
    tokens = await connect(client, email)
    await admin.faults(client.provider, email, burst_429=1, retry_after_s=60)
    with pytest.raises(RateLimitedError):
        await client.account(tokens.access_token)
    assert (await admin.account(client.provider, email))["early_calls"] == 0

    # Past what the simulator takes for a call already on its way (another pool's
    # connection), well inside the 60 s asked for.
    await asyncio.sleep(IN_FLIGHT_S + 0.2)
    await client.account(tokens.access_token)  # burst spent: answered, but too early

    assert (await admin.account(client.provider, email))["early_calls"] == 1


async def test_zoom_daily_cap_of_100_with_its_real_body(
    sim_zoom: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(sim_zoom, email)
    for n in range(100):
        await sim_zoom.create_meeting(tokens.access_token, booking(f"s-{n}"))

    with pytest.raises(DailyQuotaExhaustedError) as caught:
        await sim_zoom.create_meeting(tokens.access_token, booking("s-101"))

    assert "daily rate limit (100)" in str(caught.value)
    assert caught.value.resets_at == next_utc_midnight()
    assert not caught.value.retryable


async def test_zoom_daily_cap_resets_at_utc_midnight(
    sim_zoom: ProviderClient, admin: SimAdmin, email: str
) -> None:
    await admin.faults("zoom", email, daily_quota=2)
    tokens = await connect(sim_zoom, email)
    await sim_zoom.create_meeting(tokens.access_token, booking("a"))
    await sim_zoom.create_meeting(tokens.access_token, booking("b"))
    with pytest.raises(DailyQuotaExhaustedError):
        await sim_zoom.create_meeting(tokens.access_token, booking("c"))

    await admin.advance(24 * 3600)
    fresh = await sim_zoom.refresh(tokens.refresh_token or "")
    assert await sim_zoom.create_meeting(fresh.access_token, booking("c"))


async def test_google_usage_limits_are_no_daily_quota(
    sim_google: ProviderClient, admin: SimAdmin, email: str
) -> None:
    """Google's "Calendar usage limits exceeded." names no reset: nothing promises midnight."""
    await admin.faults("google_meet", email, daily_quota=1)
    tokens = await connect(sim_google, email)
    await sim_google.create_meeting(tokens.access_token, booking("a"))
    with pytest.raises(UsageLimitedError) as caught:
        await sim_google.create_meeting(tokens.access_token, booking("b"))
    assert caught.value.code == "quotaExceeded"
    assert not hasattr(caught.value, "resets_at")


async def test_provider_down_is_retried_then_reported(
    client: ProviderClient, admin: SimAdmin, email: str, notices: list[RetryNotice]
) -> None:
    tokens = await connect(client, email)
    await admin.faults(client.provider, down=True)

    with pytest.raises(ProviderUnavailableError) as caught:
        await client.create_meeting(tokens.access_token, booking())

    assert caught.value.status == 503 and caught.value.retryable
    assert len(notices) == client.policy.max_attempts - 1
    await admin.faults(client.provider, down=False)
    assert await client.create_meeting(tokens.access_token, booking())


async def test_server_errors_are_retried_when_safe(
    client: ProviderClient, admin: SimAdmin, email: str, notices: list[RetryNotice]
) -> None:
    tokens = await connect(client, email)
    meeting = await client.create_meeting(tokens.access_token, booking())
    await admin.faults(client.provider, email, error_rate=1.0)

    with pytest.raises(ProviderUnavailableError):
        await client.get_meeting(tokens.access_token, meeting.external_id)
    assert len(notices) == client.policy.max_attempts - 1


async def test_zoom_create_is_not_repeated_after_a_500(
    sim_zoom: ProviderClient, admin: SimAdmin, email: str, notices: list[RetryNotice]
) -> None:
    tokens = await connect(sim_zoom, email)
    await admin.faults("zoom", email, error_rate=1.0)
    with pytest.raises(ProviderUnavailableError) as caught:
        await sim_zoom.create_meeting(tokens.access_token, booking())
    assert caught.value.status == 500
    # Zoom has no idempotency key: a blind retry could make a second meeting.
    assert notices == []


async def test_timeouts_become_unavailable(sim: SimHandle, admin: SimAdmin, email: str) -> None:
    notices: list[RetryNotice] = []
    settings = sim_settings(sim, read_timeout_s=0.2, max_attempts=2)
    async with build_client("google_meet", settings=settings, observer=notices.append) as google:
        tokens = await connect(google, email)
        await admin.faults("google_meet", email, latency_ms=600)
        with pytest.raises(ProviderUnavailableError) as caught:
            await google.account(tokens.access_token)
    assert "timed out" in str(caught.value)
    assert len(notices) == 1


async def test_refused_connection_is_unavailable_and_unsent(sim: SimHandle) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = sim_settings(sim, zoom_api_base=f"{dead}/v2", max_attempts=2)
    async with build_client("zoom", settings=settings) as zoom:
        with pytest.raises(ProviderUnavailableError) as caught:
            await zoom.create_meeting("not-a-token", booking())
    assert caught.value.request_sent is False
