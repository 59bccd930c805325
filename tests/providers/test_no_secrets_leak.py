"""Tokens and client secrets never appear in log records, error strings or reprs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from services.providers import MeetingRequest, ProviderClient, ProviderError, TokenSet
from tests.providers.conftest import SimAdmin, connect


async def test_no_token_in_logs_errors_or_reprs(
    client: ProviderClient, admin: SimAdmin, email: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = await connect(client, email)
    refreshed = await client.refresh(tokens.refresh_token or "")
    secrets = {
        tokens.access_token,
        tokens.refresh_token or "",
        refreshed.access_token,
        refreshed.refresh_token or "",
        client.client_secret,
    }
    errors: list[ProviderError] = []
    await admin.faults(client.provider, email, burst_429=1, retry_after_s=0)
    request = MeetingRequest(
        switch_id="sw",
        session_id="s",
        topic="t",
        start_time=datetime(2031, 1, 1, tzinfo=UTC),
        duration_min=30,
    )
    await client.create_meeting(refreshed.access_token, request)
    for call in (
        lambda: client.account("bogus-token"),
        lambda: client.refresh(
            (tokens.refresh_token or "") if client.provider == "zoom" else "bogus"
        ),
        lambda: client.exchange_code("bogus", code_verifier="v" * 64),
    ):
        try:
            await call()
        except ProviderError as exc:
            errors.append(exc)
    await admin.revoke(client.provider, email)
    try:
        await client.refresh(refreshed.refresh_token or "")
    except ProviderError as exc:
        errors.append(exc)

    assert len(errors) == 4
    visible = caplog.text + "".join(f"{e!s}{e!r}{e.__cause__!r}" for e in errors)
    visible += repr(tokens) + str(tokens) + repr(refreshed)
    for secret in secrets:
        assert secret and secret not in visible
    assert isinstance(tokens, TokenSet)
