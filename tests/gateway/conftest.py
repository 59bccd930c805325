"""The gateway on real PostgreSQL, with the provider simulator answering over real HTTP."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from sqlalchemy import Engine, func, insert, select

from devtools.provider_sim.server import SimHandle, run_in_thread
from devtools.provider_sim.settings import ProviderSimSettings
from services.core.db.models import Connection, Outbox, SwitchRequest, User
from services.core.settings import CommonSettings
from services.oauth_gateway.adapters.web.auth import csrf_token, issue_token
from services.oauth_gateway.bootstrap import build_gateway
from services.oauth_gateway.entrypoint import create_app
from services.oauth_gateway.settings import GatewaySettings
from services.oauth_gateway.usecases.tutors import Gateway
from services.providers import ProviderSettings

BASE = "http://127.0.0.1:18000"
SIM_NAMES = {"zoom": "zoom", "google_meet": "google"}


@pytest.fixture(scope="session")
def sim() -> Iterator[SimHandle]:
    handle = run_in_thread(port=0, settings=ProviderSimSettings(port=0, seed=11))
    yield handle
    handle.stop()


def provider_settings_for(sim: SimHandle, base: str = BASE) -> ProviderSettings:
    return ProviderSettings(
        zoom_auth_base=sim.zoom_base,
        zoom_api_base=f"{sim.zoom_base}/v2",
        google_auth_base=sim.google_base,
        google_token_base=sim.google_base,
        google_api_base=sim.google_base,
        zoom_redirect_uri=f"{base}/oauth/zoom/callback",
        google_redirect_uri=f"{base}/oauth/google_meet/callback",
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
        max_retry_wait_s=2.0,
        max_attempts=2,
        conference_poll_interval_s=0.01,
        conference_poll_attempts=10,
    )


@pytest.fixture
def gateway_settings(settings: CommonSettings) -> GatewaySettings:
    return GatewaySettings(
        DATABASE_URL=settings.database_url,
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        RELINK_TOPIC_PREFIX=settings.topic_prefix,
        RELINK_GATEWAY_PUBLIC_BASE_URL=BASE,
        RELINK_GATEWAY_DB_POOL_SIZE=4,
    )


@pytest.fixture
async def gateway(gateway_settings: GatewaySettings, sim: SimHandle) -> AsyncIterator[Gateway]:
    gw = build_gateway(gateway_settings, provider_settings=provider_settings_for(sim))
    yield gw
    await gw.aclose()


@pytest.fixture
async def http(gateway: Gateway, sim: SimHandle) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app (ASGI transport); the simulator is reset afterwards."""
    app = create_app(gateway=gateway)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, timeout=30
    ) as client:
        yield client
    async with httpx.AsyncClient(base_url=sim.base_url) as admin:
        await admin.post("/_admin/reset")


@dataclass
class Person:
    id: uuid.UUID
    email: str
    role: str
    token: str
    # the session a fixture booked for this person, when it booked one
    session: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def cookies(self) -> dict[str, str]:
        """The session as the browser's cookie (per-request cookies= is deprecated in httpx)."""
        return {"Cookie": f"relink_session={self.token}"}


# `people(role="tutor", name=None)`: a new user of this test's own.
People = Callable[..., Person]


@pytest.fixture
def people(engine: Engine, gateway_settings: GatewaySettings) -> People:
    """Make users of this test's own: `people("tutor")`."""

    def make(role: str = "tutor", name: str | None = None) -> Person:
        uid = uuid.uuid4()
        email = f"{role}-{uid.hex[:8]}@example.com"
        with engine.begin() as conn:
            conn.execute(insert(User).values(id=uid, role=role, name=name or email, email=email))
        token = issue_token(
            uid,
            role=role,  # type: ignore[arg-type]
            secret=gateway_settings.session_secret.get_secret_value(),
            ttl_s=3600,
        )
        return Person(uid, email, role, token)

    return make


def csrf_for(person: Person, settings: GatewaySettings) -> dict[str, str]:
    return {
        "X-CSRF-Token": csrf_token(person.token, secret=settings.session_secret.get_secret_value())
    }


async def consent(authorize_url: str, *, email: str, decision: str = "allow") -> str:
    """Open the simulator's consent page and answer it; the callback URL it redirects to."""
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
        fields |= {"email": email, "decision": decision}
        # Google's consent lists each scope with a checkbox, ticked by default: send
        # the ticked ones, as a browser does (devtools/provider_sim/oauth.py).
        ticked = [
            unescape(v)
            for v in re.findall(
                r'<input type="checkbox" name="granted_scope" value="([^"]*)" checked>', page.text
            )
        ]
        answer = await browser.post(
            urljoin(authorize_url, action), data={**fields, "granted_scope": ticked}
        )
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


async def start(http: httpx.AsyncClient, tutor: Person, provider: str) -> str:
    """GET /oauth/<provider>/start as the tutor; the provider URL it sends them to."""
    response = await http.get(f"/oauth/{provider}/start", headers=tutor.cookies)
    assert response.status_code == 302, response.text
    return response.headers["location"]


async def callback(http: httpx.AsyncClient, tutor: Person, url: str) -> httpx.Response:
    """Follow the provider's redirect back to the gateway, as the tutor's browser."""
    parts = urlsplit(url)
    return await http.get(f"{parts.path}?{parts.query}", headers=tutor.cookies)


async def connect(
    http: httpx.AsyncClient, tutor: Person, provider: str, *, account: str | None = None
) -> httpx.Response:
    """The whole round trip: start, consent (Allow) at the simulator, callback."""
    url = await start(http, tutor, provider)
    back = await consent(url, email=account or tutor.email)
    return await callback(http, tutor, back)


def switch_id_of(response: httpx.Response) -> uuid.UUID | None:
    location = response.headers["location"]
    values = parse_qs(urlsplit(location).query).get("switch")
    return uuid.UUID(values[0]) if values else None


@dataclass(frozen=True)
class Written:
    """What the switch writes, for before/after comparisons."""

    connection: tuple[Any, ...] | None
    switches: int
    outbox: int


def written(engine: Engine, tutor_id: uuid.UUID) -> Written:
    with engine.connect() as conn:
        row = conn.execute(
            select(
                Connection.provider,
                Connection.generation,
                Connection.access_token_encrypted,
                Connection.refresh_token_encrypted,
                Connection.updated_at,
            ).where(Connection.tutor_id == tutor_id)
        ).one_or_none()
        switches = conn.scalar(
            select(func.count())
            .select_from(SwitchRequest)
            .where(SwitchRequest.tutor_id == tutor_id)
        )
        outbox = conn.scalar(
            select(func.count()).select_from(Outbox).where(Outbox.aggregate_id == str(tutor_id))
        )
    return Written(tuple(row) if row else None, int(switches or 0), int(outbox or 0))


@pytest.fixture
async def switched(http: httpx.AsyncClient, people: People) -> tuple[Person, uuid.UUID]:
    """A tutor who switched from Zoom to Google Meet; (tutor, switch id)."""
    tutor = people("tutor")
    await connect(http, tutor, "zoom")
    switch_id = switch_id_of(await connect(http, tutor, "google_meet"))
    assert switch_id is not None
    return tutor, switch_id
