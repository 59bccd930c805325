"""Zoom's real rules, enforced by the simulator, and what relink's Zoom client does about them.

Each simulator rule is exercised over HTTP: with our client where it can make
the request, with plain httpx where our client (rightly) never would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from devtools.provider_sim.server import SimHandle
from services.providers import (
    ZOOM_SCOPES,
    AuthorizationRevokedError,
    AuthorizedSession,
    InvalidRequestError,
    MeetingRequest,
    ProviderClient,
    TokenExpiredError,
    TokenSet,
    build_client,
    meeting_marker,
)
from tests.providers.conftest import SimAdmin, connect, consent, sim_settings

ALL_SCOPES = ZOOM_SCOPES.split()
START = datetime(2031, 3, 4, 15, 30, tzinfo=UTC)


def booking(session_id: str = "s-1", **changes: Any) -> MeetingRequest:
    values: dict[str, Any] = {
        "switch_id": "sw-1",
        "session_id": session_id,
        "topic": "Algebra with Ada",
        "start_time": START,
        "duration_min": 45,
        "timezone": "Europe/Paris",
    }
    return MeetingRequest(**(values | changes))


@pytest.fixture
async def zoom_with(sim: SimHandle) -> AsyncIterator[Callable[..., ProviderClient]]:
    """Zoom clients built with changed settings (e.g. fewer scopes); closed at the end."""
    made: list[ProviderClient] = []

    def build(**overrides: Any) -> ProviderClient:
        client = build_client("zoom", settings=sim_settings(sim, **overrides))
        made.append(client)
        return client

    yield build
    for client in made:
        await client.aclose()


async def raw(sim: SimHandle, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
    """A Zoom API call as any HTTP client would send it."""
    async with httpx.AsyncClient(base_url=f"{sim.zoom_base}/v2", timeout=10) as http:
        return await http.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs
        )


def create_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "topic": "Algebra",
        "type": 2,
        "start_time": "2031-03-04T15:30:00Z",
        "duration": 45,
        "timezone": "Europe/Paris",
        "agenda": "[relink:sw:s]",
    }
    return body | changes


# -- scopes, per endpoint ----------------------------------------------------------

Call = Callable[[ProviderClient, str, str], Awaitable[object]]


async def _create(client: ProviderClient, token: str, _: str) -> object:
    return await client.create_meeting(token, booking())


async def _get(client: ProviderClient, token: str, meeting_id: str) -> object:
    return await client.get_meeting(token, meeting_id)


async def _list(client: ProviderClient, token: str, _: str) -> object:
    return await client.find_meeting(token, booking())


async def _delete(client: ProviderClient, token: str, meeting_id: str) -> object:
    return await client.delete_meeting(token, meeting_id)


async def _me(client: ProviderClient, token: str, _: str) -> object:
    return await client.account(token)


ENDPOINTS: list[tuple[str, Call, str, str]] = [
    ("meeting:write:meeting", _create, "POST", "/users/me/meetings"),
    ("meeting:read:meeting", _get, "GET", "/meetings/{id}"),
    ("meeting:read:list_meetings", _list, "GET", "/users/me/meetings"),
    ("meeting:delete:meeting", _delete, "DELETE", "/meetings/{id}"),
    ("user:read:user", _me, "GET", "/users/me"),
]


@pytest.mark.parametrize(
    ("scope", "call", "method", "path"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS]
)
async def test_each_endpoint_needs_its_granular_scope(
    sim: SimHandle,
    admin: SimAdmin,
    email: str,
    zoom_with: Callable[..., ProviderClient],
    scope: str,
    call: Call,
    method: str,
    path: str,
) -> None:
    full = zoom_with()
    meeting = await full.create_meeting((await connect(full, email)).access_token, booking())
    # The tutor consents again without this one scope (the newest grant is the live one).
    lacking = zoom_with(zoom_scopes=" ".join(s for s in ALL_SCOPES if s != scope))
    tokens = await connect(lacking, email)
    assert scope not in tokens.scopes

    answer = await raw(
        sim,
        method,
        path.format(id=meeting.external_id),
        tokens.access_token,
        **({"json": create_body()} if method == "POST" else {}),
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "code": 4711,
        "message": f"Invalid access token, does not contain scopes:[{scope}].",
    }
    # Our client: only a new consent helps, so the tutor must reconnect.
    with pytest.raises(AuthorizationRevokedError) as caught:
        await call(lacking, tokens.access_token, meeting.external_id)
    assert (caught.value.code, caught.value.status) == ("4711", 400)
    # The full grant's calls still work once the tutor consents to everything again.
    again = await connect(full, email)
    await call(full, again.access_token, meeting.external_id)


async def test_granted_scopes_are_the_ones_consented(
    zoom_with: Callable[..., ProviderClient], email: str
) -> None:
    tokens = await connect(zoom_with(zoom_scopes="user:read:user"), email)
    assert tokens.scopes == ("user:read:user",)


async def test_default_scopes_let_the_in_flight_lookup_list(
    sim_zoom: ProviderClient, email: str
) -> None:
    """The migrator's dedupe lists meetings on every retried Zoom row: the scope is requested."""
    tokens = await connect(sim_zoom, email)
    assert "meeting:read:list_meetings" in tokens.scopes
    made = await sim_zoom.create_meeting(tokens.access_token, booking())
    found = await sim_zoom.find_meeting(tokens.access_token, booking())
    assert found is not None and found.external_id == made.external_id


async def test_missing_scope_does_not_spend_the_refresh_token(
    zoom_with: Callable[..., ProviderClient], email: str
) -> None:
    client = zoom_with(zoom_scopes="meeting:write:meeting user:read:user")
    tokens = await connect(client, email)
    saved: list[TokenSet] = []

    async def save(fresh: TokenSet) -> None:
        saved.append(fresh)

    session = AuthorizedSession(client, tokens, on_refresh=save)
    with pytest.raises(AuthorizationRevokedError):
        await session.find_meeting(booking())
    assert saved == [] and session.tokens is tokens
    # Unspent: Zoom's refresh tokens are single-use, and this one still works.
    fresh = await client.refresh(tokens.refresh_token or "")
    assert fresh.refresh_token != tokens.refresh_token


def zoom_answer(status: int, body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("GET", "https://api.zoom.us"))


async def test_scope_error_codes_win_over_the_401_status(sim_zoom: ProviderClient) -> None:
    """4700 may come with HTTP 401: still a scope problem a refresh cannot fix, unlike 124."""
    scope_error = sim_zoom.api_error(
        zoom_answer(
            401, {"code": 4700, "message": "Invalid access token, does not contain scopes:[x]."}
        ),
        operation="list meetings",
    )
    assert isinstance(scope_error, AuthorizationRevokedError)
    expired = sim_zoom.api_error(
        zoom_answer(401, {"code": 124, "message": "Access token is expired."}),
        operation="list meetings",
    )
    assert isinstance(expired, TokenExpiredError)


@pytest.mark.parametrize("code", [4711, 4735, 4741])
async def test_numbered_token_endpoint_errors_mean_reconnect(
    sim_zoom: ProviderClient, code: int
) -> None:
    """Zoom "OAuth error messages": 4711 scopes changed, 4735 owner gone, 4741 token revoked."""
    error = sim_zoom._token_error(
        zoom_answer(400, {"code": code, "message": "Token has been revoked."}),
        operation="token refresh",
        revoked=True,
    )
    assert isinstance(error, AuthorizationRevokedError)
    assert not error.retryable


# -- authorization codes and re-authorization --------------------------------------


async def test_a_zoom_code_lives_five_minutes(
    sim: SimHandle, sim_zoom: ProviderClient, admin: SimAdmin, email: str
) -> None:
    query, verifier = await consent(sim_zoom, email=email)
    await admin.advance(299)
    assert (await sim_zoom.exchange_code(query["code"][0], code_verifier=verifier)).access_token

    query, verifier = await consent(sim_zoom, email=email)
    await admin.advance(301)
    with pytest.raises(InvalidRequestError) as caught:
        await sim_zoom.exchange_code(query["code"][0], code_verifier=verifier)
    assert (caught.value.code, caught.value.status) == ("invalid_grant", 400)
    assert "Invalid authorization code" in caught.value.message


@pytest.mark.parametrize(
    ("provider", "body"),
    [
        ("zoom", {"reason": "Invalid authorization code", "error": "invalid_grant"}),
        ("google_meet", {"error": "invalid_grant", "error_description": "Bad Request"}),
    ],
)
async def test_a_used_code_gets_the_providers_invalid_grant(
    sim: SimHandle, email: str, provider: str, body: dict[str, str]
) -> None:
    async with build_client(provider, settings=sim_settings(sim)) as client:  # type: ignore[arg-type]
        query, verifier = await consent(client, email=email)
        await client.exchange_code(query["code"][0], code_verifier=verifier)
        form = {
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": client.redirect_uri,
            "code_verifier": verifier,
        }
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(
                client.token_url, data=form, auth=(client.client_id, client.client_secret)
            )
        assert (answer.status_code, answer.json()) == (400, body)
        with pytest.raises(InvalidRequestError):
            await client.exchange_code(query["code"][0], code_verifier=verifier)


async def test_reauthorizing_revokes_the_earlier_grant(
    sim: SimHandle, sim_zoom: ProviderClient, email: str
) -> None:
    first = await connect(sim_zoom, email)
    second = await connect(sim_zoom, email)

    old = await raw(sim, "GET", "/users/me", first.access_token)
    assert old.status_code == 401 and old.json()["code"] == 124
    with pytest.raises(AuthorizationRevokedError) as caught:
        await sim_zoom.refresh(first.refresh_token or "")
    assert caught.value.code == "invalid_grant"
    assert "Invalid Token!" in caught.value.message
    assert (await sim_zoom.account(second.access_token)).email == email
    assert (await sim_zoom.refresh(second.refresh_token or "")).access_token


async def test_reauthorizing_another_account_leaves_this_one(
    sim_zoom: ProviderClient, email: str
) -> None:
    mine = await connect(sim_zoom, email)
    await connect(sim_zoom, "someone-else-" + email)
    assert (await sim_zoom.account(mine.access_token)).email == email


# -- request limits ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"topic": "t" * 201}, "topic"),
        ({"agenda": "a" * 2001}, "agenda"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"start_time": "next tuesday"}, "start_time"),
        ({"start_time": "2031-13-40T15:30:00Z"}, "start_time"),
        ({"duration": 0}, "duration"),
        ({"tracking_fields": [{"field": "relink", "value": "x"}]}, "tracking_fields"),
    ],
)
async def test_create_refuses_what_zoom_refuses(
    sim: SimHandle,
    sim_zoom: ProviderClient,
    admin: SimAdmin,
    email: str,
    changes: dict[str, Any],
    field: str,
) -> None:
    tokens = await connect(sim_zoom, email)
    answer = await raw(
        sim, "POST", "/users/me/meetings", tokens.access_token, json=create_body(**changes)
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "code": 300,
        "message": "Validation Failed.",
        "errors": [{"field": field, "message": "Invalid field."}],
    }
    account = await admin.account("zoom", email)
    assert account["meetings"] == [] and account["create_calls"] == 0


async def test_limits_are_inclusive(sim: SimHandle, sim_zoom: ProviderClient, email: str) -> None:
    tokens = await connect(sim_zoom, email)
    body = create_body(topic="t" * 200, agenda="a" * 2000, start_time="2031-03-04T15:30:00")
    answer = await raw(sim, "POST", "/users/me/meetings", tokens.access_token, json=body)
    assert answer.status_code == 201, answer.text


async def test_defined_tracking_field_is_accepted(
    sim: SimHandle, zoom_with: Callable[..., ProviderClient], admin: SimAdmin, email: str
) -> None:
    client = zoom_with(zoom_tracking_field="relink")
    tokens = await connect(client, email)
    with pytest.raises(InvalidRequestError) as caught:
        await client.create_meeting(tokens.access_token, booking())
    assert (caught.value.code, caught.value.status) == ("300", 400)
    assert "tracking_fields" in caught.value.message

    defined = await admin.http.put(
        f"/_admin/accounts/zoom/{email}/tracking-fields", json={"fields": ["relink"]}
    )
    defined.raise_for_status()
    made = await client.create_meeting(tokens.access_token, booking())
    meeting = (await raw(sim, "GET", f"/meetings/{made.external_id}", tokens.access_token)).json()
    assert meeting["tracking_fields"] == [{"field": "relink", "value": "sw-1:s-1"}]


async def test_list_cuts_the_agenda_to_250_characters(
    sim: SimHandle, sim_zoom: ProviderClient, email: str
) -> None:
    tokens = await connect(sim_zoom, email)
    agenda = "x" * 300 + "[relink:sw:s]"
    made = await raw(
        sim, "POST", "/users/me/meetings", tokens.access_token, json=create_body(agenda=agenda)
    )
    assert made.status_code == 201
    listed = (await raw(sim, "GET", "/users/me/meetings", tokens.access_token)).json()
    assert [m["agenda"] for m in listed["meetings"]] == ["x" * 250]
    full = await raw(sim, "GET", f"/meetings/{made.json()['id']}", tokens.access_token)
    assert full.json()["agenda"] == agenda


# -- the client keeps its requests inside the limits ------------------------------


async def test_long_topic_is_cut_and_the_marker_kept(
    sim: SimHandle, sim_zoom: ProviderClient, email: str
) -> None:
    tokens = await connect(sim_zoom, email)
    request = booking(topic="Preparation for the final examination " * 20)
    made = await sim_zoom.create_meeting(tokens.access_token, request)

    meeting = (await raw(sim, "GET", f"/meetings/{made.external_id}", tokens.access_token)).json()
    assert len(meeting["topic"]) == 200 and meeting["topic"].endswith("…")
    assert meeting["topic"].startswith("Preparation for the final examination")
    marker = meeting_marker("sw-1", "s-1")
    assert meeting["agenda"].startswith(marker)
    # The listing (agenda cut to 250) still shows the whole marker: a retry finds it.
    found = await sim_zoom.find_meeting(tokens.access_token, request)
    assert found is not None and found.external_id == made.external_id


async def test_unknown_time_zone_falls_back_to_utc_at_the_same_instant(
    sim: SimHandle, sim_zoom: ProviderClient, email: str
) -> None:
    tokens = await connect(sim_zoom, email)
    made = await sim_zoom.create_meeting(tokens.access_token, booking(timezone="Europe/Atlantis"))
    meeting = (await raw(sim, "GET", f"/meetings/{made.external_id}", tokens.access_token)).json()
    assert meeting["timezone"] == "UTC"
    assert made.start_time == START


async def test_known_time_zone_is_sent_as_is(
    sim: SimHandle, sim_zoom: ProviderClient, email: str
) -> None:
    tokens = await connect(sim_zoom, email)
    made = await sim_zoom.create_meeting(tokens.access_token, booking(timezone="Asia/Kolkata"))
    meeting = (await raw(sim, "GET", f"/meetings/{made.external_id}", tokens.access_token)).json()
    assert meeting["timezone"] == "Asia/Kolkata"


async def test_naive_start_time_never_leaves(
    sim_zoom: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(sim_zoom, email)
    with pytest.raises(InvalidRequestError) as caught:
        await sim_zoom.create_meeting(
            tokens.access_token, booking(start_time=datetime(2031, 3, 4, 15, 30))
        )
    assert caught.value.status is None and not caught.value.retryable
