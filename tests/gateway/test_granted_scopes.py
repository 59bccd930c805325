"""A tutor who unticks a permission at the provider's consent screen gets a clear page, and
nothing is written: no connection change, no switch, no outbox row."""

from __future__ import annotations

import re
import uuid
from html import unescape
from urllib.parse import urljoin

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.gateway.conftest import People, callback, connect, start, written

CALENDAR = "https://www.googleapis.com/auth/calendar.events"


async def consent_granting(authorize_url: str, *, email: str, drop: str) -> str:
    """Answer the simulator's consent page with one requested scope unticked.

    Granular consent (Google's, and the simulator's checkboxes): the form
    posts the ticked scopes as `granted_scope`. Until the simulator has the
    checkboxes, it grants the `scope` field it posts back, so both carry the
    reduced list.
    """
    async with httpx.AsyncClient(timeout=10) as browser:
        page = await browser.get(authorize_url)
        page.raise_for_status()
        action = unescape(re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))  # type: ignore[union-attr]
        fields = {
            name: unescape(value)
            for name, value in re.findall(
                r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text
            )
        }
        requested = fields["scope"].split()
        assert drop in requested
        kept = [s for s in requested if s != drop]
        fields |= {"email": email, "decision": "allow", "scope": " ".join(kept)}
        data: dict[str, str | list[str]] = {**fields, "granted_scope": kept}
        answer = await browser.post(urljoin(authorize_url, action), data=data)
    assert answer.status_code == 302, answer.text
    return str(answer.headers["location"])


def counts(engine: Engine, tutor_id: uuid.UUID) -> tuple[int, int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM tutor_video_provider_connections"
                " WHERE tutor_id = :t),"
                " (SELECT count(*) FROM switch_requests WHERE tutor_id = :t),"
                " (SELECT count(*) FROM outbox WHERE aggregate_id = :s)"
            ),
            {"t": tutor_id, "s": str(tutor_id)},
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def test_unticked_calendar_refuses_the_switch(
    http: httpx.AsyncClient, people: People, engine: Engine
) -> None:
    tutor = people("tutor")
    assert (await connect(http, tutor, "zoom")).status_code == 303
    before = written(engine, tutor.id)
    assert counts(engine, tutor.id) == (1, 0, 0)

    back = await consent_granting(
        await start(http, tutor, "google_meet"), email=tutor.email, drop=CALENDAR
    )
    response = await callback(http, tutor, back)

    assert response.status_code == 400, response.text
    assert 'data-reason="scopes_missing"' in response.text
    assert "Google Calendar events" in response.text
    assert 'id="missing-scopes"' in response.text
    assert 'href="/oauth/google_meet/start"' in response.text
    assert "Your previous video provider connection is unchanged." in response.text
    # Nothing changed: still the Zoom connection, no switch, no event.
    assert written(engine, tutor.id) == before
    assert counts(engine, tutor.id) == (1, 0, 0)


@pytest.mark.parametrize(
    ("provider", "drop", "words"),
    [
        ("zoom", "meeting:write:meeting", "creating Zoom meetings"),
        ("google_meet", CALENDAR, "Google Calendar events"),
    ],
)
async def test_first_connection_without_a_needed_scope_writes_nothing(
    http: httpx.AsyncClient, people: People, engine: Engine, provider: str, drop: str, words: str
) -> None:
    tutor = people("tutor")
    back = await consent_granting(await start(http, tutor, provider), email=tutor.email, drop=drop)
    response = await callback(http, tutor, back)
    assert response.status_code == 400, response.text
    assert words in response.text
    assert counts(engine, tutor.id) == (0, 0, 0)

    # Trying again with everything ticked connects.
    assert (await connect(http, tutor, provider)).status_code == 303
    assert counts(engine, tutor.id)[0] == 1


async def test_broader_calendar_scope_counts_as_granted() -> None:
    from services.oauth_gateway.domain import missing_scopes

    requested = f"openid email {CALENDAR}"
    assert (
        missing_scopes(
            requested,
            (
                "openid",
                "https://www.googleapis.com/auth/userinfo.email",
                "https://www.googleapis.com/auth/calendar",
            ),
        )
        == ()
    )
    assert missing_scopes(requested, ("openid", "email")) == (CALENDAR,)
    # RFC 6749 §5.1: no `scope` in the answer means exactly what was asked.
    assert missing_scopes(requested, ()) == ()
