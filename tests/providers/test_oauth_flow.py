"""The OAuth authorization-code flow with PKCE against the simulator, for both providers."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from services.providers import (
    AuthorizationRevokedError,
    AuthorizedSession,
    InvalidRequestError,
    ProviderClient,
    TokenExpiredError,
    TokenSet,
)
from tests.providers.conftest import SimAdmin, connect, consent


async def test_authorization_url_asks_for_pkce_s256(client: ProviderClient) -> None:
    url = client.authorization_url(state="abc", code_verifier="v" * 64)
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["state"] == ["abc"]
    assert "v" * 64 not in url
    if client.provider == "google_meet":
        assert query["access_type"] == ["offline"]
        assert "https://www.googleapis.com/auth/calendar.events" in query["scope"][0].split()
        assert urlsplit(url).path.endswith("/o/oauth2/v2/auth")
    else:
        assert urlsplit(url).path.endswith("/oauth/authorize")


async def test_allow_gives_tokens_for_the_chosen_account(
    client: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(client, email)

    account = await client.account(tokens.access_token)
    assert account.email == email
    assert account.id == (await admin.account(client.provider, email))["id"]
    assert tokens.refresh_token
    assert not tokens.expired()


async def test_deny_redirects_with_access_denied(client: ProviderClient, email: str) -> None:
    query, _ = await consent(client, email=email, decision="deny", state="s1")
    assert query == {"error": ["access_denied"], "state": ["s1"]}


async def test_wrong_code_verifier_is_refused(client: ProviderClient, email: str) -> None:
    query, _ = await consent(client, email=email)
    with pytest.raises(InvalidRequestError) as caught:
        await client.exchange_code(query["code"][0], code_verifier="x" * 64)
    assert caught.value.code == "invalid_grant"


async def test_a_code_works_once(client: ProviderClient, email: str) -> None:
    query, verifier = await consent(client, email=email)
    await client.exchange_code(query["code"][0], code_verifier=verifier)
    with pytest.raises(InvalidRequestError):
        await client.exchange_code(query["code"][0], code_verifier=verifier)


async def test_zoom_rotates_the_refresh_token(sim_zoom: ProviderClient, email: str) -> None:
    first = await connect(sim_zoom, email)
    assert first.refresh_token

    second = await sim_zoom.refresh(first.refresh_token)
    assert second.refresh_token and second.refresh_token != first.refresh_token

    with pytest.raises(AuthorizationRevokedError):
        await sim_zoom.refresh(first.refresh_token)
    third = await sim_zoom.refresh(second.refresh_token)
    assert (await sim_zoom.account(third.access_token)).email == email


async def test_google_keeps_the_refresh_token(sim_google: ProviderClient, email: str) -> None:
    first = await connect(sim_google, email)
    second = await sim_google.refresh(first.refresh_token or "")
    assert second.refresh_token == first.refresh_token
    assert second.access_token != first.access_token
    await sim_google.refresh(first.refresh_token or "")


async def test_revoked_grant_means_reconnect(
    client: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(client, email)
    await admin.revoke(client.provider, email)

    with pytest.raises(TokenExpiredError):
        await client.account(tokens.access_token)
    with pytest.raises(AuthorizationRevokedError) as caught:
        await client.refresh(tokens.refresh_token or "")
    assert not caught.value.retryable
    if client.provider == "google_meet":
        assert caught.value.code == "invalid_grant"


async def test_client_revocation_ends_the_grant(client: ProviderClient, email: str) -> None:
    tokens = await connect(client, email)
    await client.revoke(tokens.refresh_token or "")
    with pytest.raises(AuthorizationRevokedError):
        await client.refresh(tokens.refresh_token or "")


async def test_google_revocation_ends_every_grant_of_the_account(
    sim_google: ProviderClient, email: str
) -> None:
    """One Google grant per account and app: revoking the newer consent's token ends the older."""
    older = await connect(sim_google, email)
    newer = await connect(sim_google, email)
    await sim_google.revoke(newer.refresh_token or "")
    with pytest.raises(AuthorizationRevokedError):
        await sim_google.refresh(older.refresh_token or "")


async def test_expired_token_is_refreshed_once_and_persisted(
    client: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(client, email)
    saved: list[TokenSet] = []

    async def save(fresh: TokenSet) -> None:
        saved.append(fresh)

    session = AuthorizedSession(client, tokens, on_refresh=save)
    await admin.expire_tokens(client.provider, email)

    account = await session.account()

    assert account.email == email
    assert len(saved) == 1 and session.tokens is saved[0]
    if client.provider == "zoom":
        assert saved[0].refresh_token != tokens.refresh_token
        with pytest.raises(AuthorizationRevokedError):
            await client.refresh(tokens.refresh_token or "")


async def test_clock_moved_past_expiry_refreshes_before_the_call(
    client: ProviderClient, admin: SimAdmin, email: str
) -> None:
    await admin.faults(client.provider, email, token_ttl_s=30)
    tokens = await connect(client, email)
    await admin.advance(31)
    saved: list[TokenSet] = []

    async def save(fresh: TokenSet) -> None:
        saved.append(fresh)

    session = AuthorizedSession(client, tokens, on_refresh=save)
    with pytest.raises(TokenExpiredError):
        await client.account(tokens.access_token)
    assert (await session.account()).email == email
    assert len(saved) == 1


async def test_revoked_grant_surfaces_through_the_session(
    client: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(client, email)
    await admin.revoke(client.provider, email)

    async def save(fresh: TokenSet) -> None:
        raise AssertionError("nothing to save")

    with pytest.raises(AuthorizationRevokedError):
        await AuthorizedSession(client, tokens, on_refresh=save).account()
