"""Google's rules as the simulator enforces them, and what our Google client does about them.

Each simulator rule is exercised over HTTP: with our client where it can
make the request, with plain httpx where our client (rightly) never would.
Sources are cited next to each rule in devtools/provider_sim/google_api.py
and devtools/provider_sim/oauth.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from devtools.provider_sim.server import SimHandle
from services.providers import (
    AuthorizationRevokedError,
    ConferenceFailedError,
    DailyQuotaExhaustedError,
    InvalidRequestError,
    MeetingRequest,
    NoJoinLinkError,
    ProviderClient,
    RateLimitedError,
    RetryNotice,
    TokenSet,
    UsageLimitedError,
    build_client,
    new_pkce_verifier,
)
from services.providers._google import SUMMARY_MAX
from tests.providers.conftest import SimAdmin, connect, sim_settings

CALENDAR_EVENTS = "https://www.googleapis.com/auth/calendar.events"
CALENDAR = "https://www.googleapis.com/auth/calendar"
EVENTS = "/calendar/v3/calendars/primary/events"
CHECKBOX = re.compile(r'<input type="checkbox" name="granted_scope" value="([^"]*)" checked>')

# Google's body for a token without the endpoint's scope (see google_api.py).
INSUFFICIENT_SCOPES = {
    "code": 403,
    "message": "Request had insufficient authentication scopes.",
    "errors": [
        {
            "message": "Insufficient Permission",
            "domain": "global",
            "reason": "insufficientPermissions",
        }
    ],
    "status": "PERMISSION_DENIED",
}


def booking(session_id: str = "session-1", **changes: Any) -> MeetingRequest:
    request = MeetingRequest(
        switch_id="switch-1",
        session_id=session_id,
        topic="Algebra with Ada",
        start_time=datetime(2031, 3, 4, 15, 30, tzinfo=UTC),
        duration_min=45,
        timezone="Europe/Paris",
    )
    return replace(request, **changes)


def event(**changes: Any) -> dict[str, Any]:
    """A valid events.insert body; `changes` override its fields."""
    body: dict[str, Any] = {
        "summary": "Algebra",
        "start": {"dateTime": "2031-03-04T15:30:00+00:00", "timeZone": "Europe/Paris"},
        "end": {"dateTime": "2031-03-04T16:15:00+00:00", "timeZone": "Europe/Paris"},
    }
    body.update(changes)
    return body


async def consent_page(client: ProviderClient, email: str) -> tuple[str, str, str]:
    """The consent page's HTML, the URL it was served at, and the PKCE verifier."""
    verifier = new_pkce_verifier()
    url = client.authorization_url(state="s", code_verifier=verifier, login_hint=email)
    async with httpx.AsyncClient(timeout=10) as browser:
        page = await browser.get(url)
    page.raise_for_status()
    return page.text, url, verifier


async def connect_ticking(
    client: ProviderClient, email: str, *, ticked: list[str] | None = None
) -> TokenSet:
    """Consent as `email`, leaving ticked only `ticked` (None: as the page shows them)."""
    html, url, verifier = await consent_page(client, email)
    action = unescape(re.search(r'<form method="post" action="([^"]+)"', html).group(1))  # type: ignore[union-attr]
    fields: dict[str, Any] = {
        name: unescape(value)
        for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html)
    }
    fields |= {"email": email, "decision": "allow"}
    fields["granted_scope"] = (
        [unescape(v) for v in CHECKBOX.findall(html)] if ticked is None else ticked
    )
    async with httpx.AsyncClient(timeout=10) as browser:
        answer = await browser.post(urljoin(url, action), data=fields)
    assert answer.status_code == 302, answer.text
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    return await client.exchange_code(code, code_verifier=verifier)


@pytest.fixture
async def google_with_scopes(
    sim: SimHandle, request: pytest.FixtureRequest
) -> AsyncIterator[ProviderClient]:
    """A Google client asking for the scopes the test is parametrized with."""
    settings = sim_settings(sim, google_scopes=request.param)
    async with build_client("google_meet", settings=settings) as client:
        yield client


def api(sim: SimHandle, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=sim.google_base, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


# -- granular consent and scopes per endpoint ----------------------------------------


async def test_consent_screen_has_a_ticked_checkbox_per_non_sign_in_scope(
    sim_google: ProviderClient, email: str
) -> None:
    html, _, _ = await consent_page(sim_google, email)
    # openid and email are Google's Sign-In scopes: consented as a whole, no checkbox.
    assert CHECKBOX.findall(html) == [CALENDAR_EVENTS]


async def test_token_scope_is_what_stayed_ticked(
    sim: SimHandle, sim_google: ProviderClient, email: str
) -> None:
    ticked = await connect_ticking(sim_google, email)
    assert set(ticked.scopes) == {"openid", "email", CALENDAR_EVENTS}

    unticked = await connect_ticking(sim_google, email, ticked=[])
    assert set(unticked.scopes) == {"openid", "email"}
    # Without the Calendar scope: Google's 403, exactly as Google words it ...
    async with api(sim, unticked.access_token) as http:
        refused = await http.post(EVENTS, json=event(), params={"conferenceDataVersion": "1"})
        read = await http.get(f"{EVENTS}/abcdefgh")
        # ... while userinfo, which needs only openid/email, still answers.
        me = await http.get("/oauth2/v3/userinfo")
    assert refused.status_code == 403 and read.status_code == 403
    body = refused.json()["error"]
    assert {k: body[k] for k in INSUFFICIENT_SCOPES} == INSUFFICIENT_SCOPES
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert me.status_code == 200 and me.json()["email"] == email.lower()
    # Our client reads it as "only a new consent helps".
    with pytest.raises(AuthorizationRevokedError) as caught:
        await sim_google.create_meeting(unticked.access_token, booking())
    assert caught.value.code == "insufficientPermissions"


async def test_a_ticked_scope_that_was_never_requested_grants_nothing(
    sim_google: ProviderClient, email: str
) -> None:
    tokens = await connect_ticking(sim_google, email, ticked=[CALENDAR_EVENTS, CALENDAR])
    assert set(tokens.scopes) == {"openid", "email", CALENDAR_EVENTS}


@pytest.mark.parametrize("google_with_scopes", [CALENDAR_EVENTS], indirect=True)
async def test_userinfo_needs_openid_or_email(
    google_with_scopes: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(google_with_scopes, email)
    assert tokens.scopes == (CALENDAR_EVENTS,)
    with pytest.raises(AuthorizationRevokedError):
        await google_with_scopes.account(tokens.access_token)
    # The Calendar scope alone is enough for events.
    assert (await google_with_scopes.create_meeting(tokens.access_token, booking())).join_url


@pytest.mark.parametrize("google_with_scopes", [f"openid email {CALENDAR}"], indirect=True)
async def test_the_full_calendar_scope_also_allows_events(
    google_with_scopes: ProviderClient, email: str
) -> None:
    tokens = await connect(google_with_scopes, email)
    assert (await google_with_scopes.account(tokens.access_token)).email == email.lower()
    assert (await google_with_scopes.create_meeting(tokens.access_token, booking())).join_url


# -- request limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "status", "reason", "message"),
    [
        (
            {"start": {"dateTime": "2031-03-04T15:30:00+00:00", "timeZone": "Mars/Olympus"}},
            400,
            "invalid",
            "Invalid time zone definition for start time.",
        ),
        (
            {"end": {"dateTime": "2031-03-04T16:15:00+00:00", "timeZone": "CEST"}},
            400,
            "invalid",
            "Invalid time zone definition for end time.",
        ),
        (
            {"start": {"dateTime": "2031-03-04T15:30:00"}},
            400,
            "required",
            "Missing time zone definition for start time.",
        ),
        ({"start": {"dateTime": "2031-02-30T15:30:00Z"}}, 400, "invalid", "Invalid start time."),
        (
            {"end": {"dateTime": "2031-03-04T15:30:00+00:00"}},
            400,
            "timeRangeEmpty",
            "The specified time range is empty.",
        ),
        ({"summary": "x" * (SUMMARY_MAX + 1)}, 400, "invalid", "Invalid value for: summary"),
        ({"description": "x" * 8193}, 400, "invalid", "Invalid value for: description"),
    ],
)
async def test_refused_event_bodies(
    sim: SimHandle,
    sim_google: ProviderClient,
    admin: SimAdmin,
    email: str,
    changes: dict[str, Any],
    status: int,
    reason: str,
    message: str,
) -> None:
    tokens = await connect(sim_google, email)
    async with api(sim, tokens.access_token) as http:
        answer = await http.post(EVENTS, json=event(**changes))
    assert answer.status_code == status
    error = answer.json()["error"]
    assert (error["errors"][0]["reason"], error["message"]) == (reason, message)
    assert (await admin.account("google_meet", email))["meetings"] == []


async def test_limits_accept_what_google_accepts(
    sim: SimHandle, sim_google: ProviderClient, email: str
) -> None:
    tokens = await connect(sim_google, email)
    body = event(
        summary="x" * SUMMARY_MAX,
        description="y" * 8192,
        # A wall-clock time with its zone instead of an offset is fine.
        start={"dateTime": "2031-03-04T12:00:00", "timeZone": "America/Sao_Paulo"},
    )
    async with api(sim, tokens.access_token) as http:
        answer = await http.post(EVENTS, json=body)
    assert answer.status_code == 200, answer.text


async def test_an_unknown_conference_type_is_refused(
    sim: SimHandle, sim_google: ProviderClient, email: str
) -> None:
    tokens = await connect(sim_google, email)
    create = {"requestId": "r1", "conferenceSolutionKey": {"type": "zoomMeeting"}}
    async with api(sim, tokens.access_token) as http:
        answer = await http.post(
            EVENTS,
            json=event(conferenceData={"createRequest": create}),
            params={"conferenceDataVersion": "1"},
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "Invalid conference type value."


async def test_client_refuses_an_unknown_time_zone_before_calling_google(
    sim_google: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(sim_google, email)
    with pytest.raises(InvalidRequestError) as caught:
        await sim_google.create_meeting(tokens.access_token, booking(timezone="Mars/Olympus"))
    assert caught.value.code == "invalidTimeZone"
    assert caught.value.status is None  # never sent
    assert (await admin.account("google_meet", email))["create_calls"] == 0


async def test_client_refuses_dates_out_of_range_before_calling_google(
    sim_google: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(sim_google, email)
    late = booking(start_time=datetime(9999, 12, 31, 23, 30, tzinfo=UTC), duration_min=60)
    with pytest.raises(InvalidRequestError) as caught:
        await sim_google.create_meeting(tokens.access_token, late)
    assert caught.value.code == "invalidTimeRange"
    assert (await admin.account("google_meet", email))["create_calls"] == 0


async def test_client_cuts_a_long_topic_to_what_google_takes(
    sim_google: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(sim_google, email)
    topic = "Revision: " + "quadratic equations " * 200
    meeting = await sim_google.create_meeting(tokens.access_token, booking(topic=topic))
    assert meeting.join_url
    [stored] = (await admin.account("google_meet", email))["meetings"]
    assert len(stored["summary"]) == SUMMARY_MAX
    assert stored["summary"].startswith("Revision: quadratic") and stored["summary"].endswith("…")


# -- Google's refusal forms -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reason", "message"),
    [
        ("google_rate_limit_403", "rateLimitExceeded", "Rate Limit Exceeded"),
        ("google_user_rate_limit_403", "userRateLimitExceeded", "User Rate Limit Exceeded"),
    ],
)
async def test_403_rate_limits_are_backed_off_and_retried(
    sim: SimHandle,
    sim_google: ProviderClient,
    admin: SimAdmin,
    email: str,
    notices: list[RetryNotice],
    fault: str,
    reason: str,
    message: str,
) -> None:
    tokens = await connect(sim_google, email)
    await admin.faults("google_meet", email, **{fault: 1})
    async with api(sim, tokens.access_token) as http:
        refused = await http.get(f"{EVENTS}/abcdefgh")
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "errors": [{"domain": "usageLimits", "reason": reason, "message": message}],
        "code": 403,
        "message": message,
    }

    await admin.faults("google_meet", email, **{fault: 2})
    meeting = await sim_google.create_meeting(tokens.access_token, booking())
    assert meeting.join_url
    waits = [n.error for n in notices if isinstance(n.error, RateLimitedError)]
    assert len(waits) == 2 and {(e.status, e.code) for e in waits} == {(403, reason)}


async def test_usage_limits_are_not_a_daily_quota(
    sim: SimHandle,
    sim_google: ProviderClient,
    admin: SimAdmin,
    email: str,
    notices: list[RetryNotice],
) -> None:
    tokens = await connect(sim_google, email)
    await admin.faults("google_meet", email, google_usage_limits=1)
    with pytest.raises(UsageLimitedError) as caught:
        await sim_google.create_meeting(tokens.access_token, booking())
    assert not isinstance(caught.value, DailyQuotaExhaustedError)
    assert (caught.value.status, caught.value.code) == (403, "quotaExceeded")
    assert caught.value.retryable
    # Not hammered in place: a retry within seconds cannot lift a Calendar limit.
    assert notices == []
    assert (await admin.account("google_meet", email))["create_calls"] == 1
    # Later, the same session goes through.
    assert (await sim_google.create_meeting(tokens.access_token, booking())).join_url

    await admin.faults("google_meet", email, google_usage_limits=1)
    async with api(sim, tokens.access_token) as http:
        refused = await http.post(EVENTS, json=event())
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "errors": [
            {
                "domain": "usageLimits",
                "reason": "quotaExceeded",
                "message": "Calendar usage limits exceeded.",
            }
        ],
        "code": 403,
        "message": "Calendar usage limits exceeded.",
    }


async def test_a_failed_conference_is_recreated_on_the_same_event(
    sim: SimHandle, sim_google: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(sim_google, email)
    await admin.faults("google_meet", email, conference_failures=1)
    with pytest.raises(ConferenceFailedError):
        await sim_google.create_meeting(tokens.access_token, booking())

    meeting = await sim_google.create_meeting(tokens.access_token, booking())

    assert meeting.join_url
    async with httpx.AsyncClient(timeout=10) as browser:
        assert (await browser.get(meeting.join_url)).status_code == 200
    account = await admin.account("google_meet", email)
    assert [m["id"] for m in account["meetings"]] == [meeting.external_id]
    assert account["conferences"] == 2
    # A third try finds the working conference and makes none.
    again = await sim_google.create_meeting(tokens.access_token, booking())
    assert again.join_url == meeting.join_url
    assert (await admin.account("google_meet", email))["conferences"] == 2


async def test_a_repeated_request_id_is_ignored(
    sim: SimHandle, sim_google: ProviderClient, admin: SimAdmin, email: str
) -> None:
    """The same createRequest.requestId on the same event makes no new conference."""
    tokens = await connect(sim_google, email)
    await admin.faults("google_meet", email, conference_failures=1, conference_pending_reads=0)
    create = {"requestId": "first", "conferenceSolutionKey": {"type": "hangoutsMeet"}}
    params = {"conferenceDataVersion": "1"}
    async with api(sim, tokens.access_token) as http:
        made = await http.post(
            EVENTS,
            json=event(id="abcdefgh", conferenceData={"createRequest": create}),
            params=params,
        )
        same = await http.patch(
            f"{EVENTS}/abcdefgh", json={"conferenceData": {"createRequest": create}}, params=params
        )
        create["requestId"] = "second"
        fresh = await http.patch(
            f"{EVENTS}/abcdefgh", json={"conferenceData": {"createRequest": create}}, params=params
        )

    def status(answer: httpx.Response) -> str:
        return str(answer.json()["conferenceData"]["createRequest"]["status"]["statusCode"])

    assert (status(made), status(same), status(fresh)) == ("failure", "failure", "success")
    assert fresh.json()["hangoutLink"]


async def test_an_event_without_conference_data_is_an_error_and_removed(
    sim_google: ProviderClient, admin: SimAdmin, email: str
) -> None:
    tokens = await connect(sim_google, email)
    await admin.faults("google_meet", email, conference_missing=1)
    with pytest.raises(NoJoinLinkError) as caught:
        await sim_google.create_meeting(tokens.access_token, booking())
    assert not caught.value.retryable
    assert "without a Meet link" in str(caught.value)
    account = await admin.account("google_meet", email)
    assert account["create_calls"] == 1 and account["meetings"] == []


async def test_a_retry_after_the_linkless_event_was_deleted_makes_a_new_event(
    sim_google: ProviderClient, admin: SimAdmin, email: str
) -> None:
    """Google keeps a deleted event's id taken: the retry steps to the next derived id."""
    tokens = await connect(sim_google, email)
    await admin.faults("google_meet", email, conference_missing=1)
    with pytest.raises(NoJoinLinkError) as caught:
        await sim_google.create_meeting(tokens.access_token, booking())
    assert caught.value.code == "noConferenceData"

    # Meet works again (the tutor fixed their settings) and the session is retried.
    meeting = await sim_google.create_meeting(tokens.access_token, booking())
    found = await sim_google.find_meeting(tokens.access_token, booking())

    assert meeting.join_url
    assert found is not None and found.external_id == meeting.external_id
    account = await admin.account("google_meet", email)
    assert [m["id"] for m in account["meetings"]] == [meeting.external_id]
    # Once more: the same (second) event, no third.
    assert (await sim_google.create_meeting(tokens.access_token, booking())) == meeting
    # Two events were ever made (inserts refused as duplicates make none).
    assert (await admin.account("google_meet", email))["create_calls"] == 2
