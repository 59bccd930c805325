"""The provider simulator on a background thread, and clients pointed at it."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from devtools.provider_sim.server import SimHandle, run_in_thread
from devtools.provider_sim.settings import ProviderSimSettings
from services.providers import (
    ProviderClient,
    ProviderName,
    ProviderSettings,
    RetryNotice,
    TokenSet,
    build_client,
    new_pkce_verifier,
)

SIM_NAMES: dict[ProviderName, str] = {"zoom": "zoom", "google_meet": "google"}


@pytest.fixture(scope="session")
def sim() -> Iterator[SimHandle]:
    """One simulator for the test session, on a free port."""
    handle = run_in_thread(port=0, settings=ProviderSimSettings(port=0, seed=7))
    yield handle
    handle.stop()


class SimAdmin:
    """The simulator's admin API, as tests use it."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def faults(self, provider: ProviderName, email: str | None = None, **faults: Any) -> None:
        path = f"/_admin/faults/{SIM_NAMES[provider]}" + (f"/{email}" if email else "")
        (await self.http.put(path, json=faults)).raise_for_status()

    async def account(self, provider: ProviderName, email: str) -> dict[str, Any]:
        response = await self.http.get(f"/_admin/accounts/{SIM_NAMES[provider]}/{email}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def revoke(self, provider: ProviderName, email: str) -> None:
        path = f"/_admin/accounts/{SIM_NAMES[provider]}/{email}/revoke"
        (await self.http.post(path)).raise_for_status()

    async def expire_tokens(self, provider: ProviderName, email: str) -> None:
        path = f"/_admin/accounts/{SIM_NAMES[provider]}/{email}/expire-tokens"
        (await self.http.post(path)).raise_for_status()

    async def advance(self, seconds: float) -> None:
        (
            await self.http.post("/_admin/clock/advance", json={"seconds": seconds})
        ).raise_for_status()


@pytest.fixture
async def admin(sim: SimHandle) -> AsyncIterator[SimAdmin]:
    """The admin API; the simulator is reset after each test."""
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=10) as http:
        yield SimAdmin(http)
        (await http.post("/_admin/reset")).raise_for_status()


def sim_settings(sim: SimHandle, **overrides: Any) -> ProviderSettings:
    """Client settings aimed at the simulator, with short waits so tests stay quick."""
    values: dict[str, Any] = {
        "zoom_auth_base": sim.zoom_base,
        "zoom_api_base": f"{sim.zoom_base}/v2",
        "google_auth_base": sim.google_base,
        "google_token_base": sim.google_base,
        "google_api_base": sim.google_base,
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.05,
        "max_retry_wait_s": 5.0,
        "conference_poll_interval_s": 0.01,
        "conference_poll_attempts": 10,
    }
    values.update(overrides)
    return ProviderSettings(**values)


@pytest.fixture
def notices() -> list[RetryNotice]:
    """The retry notices the clients report (waits before retries)."""
    return []


@pytest.fixture(params=["zoom", "google_meet"])
async def client(
    request: pytest.FixtureRequest, sim: SimHandle, notices: list[RetryNotice]
) -> AsyncIterator[ProviderClient]:
    """A client for each provider, pointed at the simulator."""
    async with build_client(
        request.param, settings=sim_settings(sim), observer=notices.append
    ) as c:
        yield c


@pytest.fixture
def email() -> str:
    """An account of this test's own."""
    return f"tutor-{uuid.uuid4().hex[:10]}@example.com"


async def consent(
    client: ProviderClient, *, email: str, decision: str = "allow", state: str = "st4te"
) -> tuple[dict[str, list[str]], str]:
    """Open the consent page and submit it; the callback query and the PKCE verifier."""
    verifier = new_pkce_verifier()
    url = client.authorization_url(state=state, code_verifier=verifier, login_hint=email)
    async with httpx.AsyncClient(timeout=10) as browser:
        page = await browser.get(url)
        page.raise_for_status()
        form = page.text
        action = unescape(re.search(r'<form method="post" action="([^"]+)"', form).group(1))  # type: ignore[union-attr]
        fields = {
            name: unescape(value)
            for name, value in re.findall(
                r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form
            )
        }
        fields |= {"email": email, "decision": decision}
        # Google's consent lists each scope with a checkbox, ticked by default: send
        # the ticked ones, as a browser does (devtools/provider_sim/oauth.py).
        ticked = [
            unescape(v)
            for v in re.findall(
                r'<input type="checkbox" name="granted_scope" value="([^"]*)" checked>', form
            )
        ]
        answer = await browser.post(urljoin(url, action), data={**fields, "granted_scope": ticked})
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(client.redirect_uri)
    return parse_qs(urlsplit(location).query), verifier


async def connect(client: ProviderClient, email: str) -> TokenSet:
    """The whole authorization-code flow, as a tutor clicking Allow."""
    query, verifier = await consent(client, email=email)
    return await client.exchange_code(query["code"][0], code_verifier=verifier)


@pytest.fixture
async def sim_zoom(sim: SimHandle, notices: list[RetryNotice]) -> AsyncIterator[ProviderClient]:
    """The Zoom client alone."""
    async with build_client("zoom", settings=sim_settings(sim), observer=notices.append) as c:
        yield c


@pytest.fixture
async def sim_google(sim: SimHandle, notices: list[RetryNotice]) -> AsyncIterator[ProviderClient]:
    """The Google Meet client alone."""
    async with build_client(
        "google_meet", settings=sim_settings(sim), observer=notices.append
    ) as c:
        yield c
