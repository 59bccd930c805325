"""Gateway hardening (issue #18): limits before parsing, request ids in every error,
security headers, no bare text/plain 500, and roles checked against the database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import Engine, text

from devtools.provider_sim.server import SimHandle
from services.oauth_gateway.adapters.web.auth import VERSION, _b64, _sign, issue_token
from services.oauth_gateway.entrypoint import create_app
from services.oauth_gateway.settings import GatewaySettings
from services.oauth_gateway.usecases.tutors import Gateway
from tests.gateway.conftest import BASE, People, connect
from tests.gateway.test_bookings_and_keys import booking, live_meetings, sim_account


async def test_a_big_body_is_refused_unread_before_authentication(
    http: httpx.AsyncClient,
) -> None:
    # no credentials at all: the 413 comes before the 401, so nothing parsed it
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    answer = await http.post(
        "/api/bookings", content=big, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413
    body = answer.json()
    assert body["error"] == "body_too_large"
    assert body["request_id"] == answer.headers["x-request-id"]


async def test_a_streamed_body_without_length_is_cut_at_the_limit(
    http: httpx.AsyncClient, people: People
) -> None:
    tutor = people("tutor")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(200):
            yield b" " * 4096

    answer = await http.post(
        "/api/bookings",
        content=chunks(),
        headers={**tutor.headers, "content-type": "application/json"},
    )
    assert answer.status_code == 413


async def test_a_long_url_is_refused(http: httpx.AsyncClient) -> None:
    answer = await http.get("/api/connection?x=" + "a" * 10_000)
    assert answer.status_code == 414
    assert answer.json()["error"] == "url_too_long"


async def test_errors_carry_the_request_id_and_pages_the_security_headers(
    http: httpx.AsyncClient, people: People
) -> None:
    unauthenticated = await http.get("/api/connection", headers={"x-request-id": "trace-12345678"})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["request_id"] == "trace-12345678"
    assert unauthenticated.headers["x-request-id"] == "trace-12345678"
    forged = await http.get("/api/connection", headers={"x-request-id": "<script>"})
    assert forged.headers["x-request-id"] != "<script>"
    tutor = people("tutor")
    page = await http.get("/tutor/video-setup", headers=tutor.cookies)
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    error_page = await http.get("/tutor/video-setup")
    assert error_page.status_code == 401
    assert error_page.headers["x-request-id"] in error_page.text


async def test_a_signed_token_with_infinite_expiry_is_a_401_not_a_500(
    http: httpx.AsyncClient, gateway_settings: GatewaySettings, people: People
) -> None:
    tutor = people("tutor")
    payload = json.dumps({"sub": str(tutor.id), "role": "tutor", "exp": float("inf")})
    assert "Infinity" in payload
    body = f"{VERSION}.{_b64(payload.encode())}"
    token = f"{body}.{_sign(gateway_settings.session_secret.get_secret_value(), body)}"
    answer = await http.get("/api/connection", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    assert answer.json()["error"]


async def test_an_unexpected_error_answers_in_the_error_shape(gateway: Gateway) -> None:
    app = create_app(gateway=gateway)

    @app.get("/api/_boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        answer = await client.get("/api/_boom")
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"] == "internal_error"
    assert answer.json()["request_id"] == answer.headers["x-request-id"]
    assert "a bug" not in answer.text


async def test_docs_and_metrics_can_be_turned_off(gateway: Gateway) -> None:
    settings = gateway.settings.model_copy(update={"expose_docs": False, "expose_metrics": False})
    app = create_app(settings, gateway=gateway)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        for path in ("/docs", "/openapi.json", "/metrics"):
            assert (await c.get(path)).status_code == 404, path
        assert (await c.get("/healthz")).status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(relink_env: dict[str, str]) -> Iterator[str]:
    """`relink gateway` as a real process on a free port."""
    port = _free_port()
    env = {**relink_env, "RELINK_GATEWAY_PORT": str(port), "RELINK_GATEWAY_HOST": "127.0.0.1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=os.getcwd(),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        process.kill()
        raise AssertionError(process.stderr.read().decode() if process.stderr else "no start")
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_the_served_gateway_refuses_a_big_body_over_real_http(served: str) -> None:
    answer = httpx.post(
        f"{served}/api/bookings",
        content=b"x" * (8 * 1024 * 1024),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 413
    assert answer.json()["request_id"] == answer.headers["x-request-id"]
    assert httpx.get(f"{served}/healthz").status_code == 200  # still serving


async def test_the_role_comes_from_the_database_not_the_token(
    http: httpx.AsyncClient, gateway_settings: GatewaySettings, people: People, engine: Engine
) -> None:
    student = people("student")
    secret = gateway_settings.session_secret.get_secret_value()
    # a validly signed token that calls a student a tutor
    lying = issue_token(student.id, role="tutor", secret=secret, ttl_s=600)
    for path in ("/api/connection", "/api/switches", "/api/tutor/sessions", "/tutor/video-setup"):
        answer = await http.get(path, headers={"Authorization": f"Bearer {lying}"})
        assert answer.status_code == 403, (path, answer.status_code)
    # the student's own token still works for the student's pages
    assert (await http.get("/api/student/sessions", headers=student.headers)).status_code == 200
    # a token for a user the platform deleted signs nobody in
    tutor = people("tutor")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": tutor.id})
    gone = await http.get("/api/connection", headers=tutor.headers)
    assert gone.status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "cross-site"},
        {"origin": "https://evil.example"},
        {"origin": "null"},
    ],
    ids=["sec-fetch-site", "origin", "opaque-origin"],
)
async def test_a_switch_cannot_be_started_from_another_site(
    http: httpx.AsyncClient, people: People, engine: Engine, headers: dict[str, str]
) -> None:
    tutor = people("tutor")
    answer = await http.get("/oauth/zoom/start", headers={**tutor.cookies, **headers})
    assert answer.status_code == 403
    with engine.connect() as conn:
        states = conn.execute(
            text("SELECT count(*) FROM oauth_states WHERE tutor_id = :t"), {"t": tutor.id}
        ).scalar_one()
    assert states == 0  # nothing was started


@pytest.mark.parametrize("site", ["same-origin", "same-site", "none", None])
async def test_a_switch_starts_from_our_page_a_bookmark_or_an_old_browser(
    http: httpx.AsyncClient, people: People, site: str | None
) -> None:
    tutor = people("tutor")
    headers = dict(tutor.cookies)
    if site is not None:
        headers["sec-fetch-site"] = site
    answer = await http.get("/oauth/zoom/start", headers=headers)
    assert answer.status_code == 302


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"topic": "Algebra\u0000"}, "topic"),
        ({"topic": "Algebra\u001b[31m"}, "topic"),
        ({"topic": "   "}, "topic"),
        ({"scheduled_start_at": "9999-12-31T23:00:00+00:00"}, "scheduled_start_at"),
    ],
    ids=["nul", "escape", "blank", "year-9999"],
)
async def test_a_booking_the_provider_or_database_cannot_hold_is_a_422_and_makes_nothing(
    http: httpx.AsyncClient,
    people: People,
    sim: SimHandle,
    engine: Engine,
    change: dict[str, str],
    field: str,
) -> None:
    tutor, student = people("tutor"), people("student")
    await connect(http, tutor, "google_meet")
    answer = await http.post(
        "/api/bookings", json={**booking(student.id), **change}, headers=tutor.headers
    )
    assert answer.status_code == 422, answer.text
    assert field in answer.text
    google = await sim_account(sim, "google_meet", tutor.email)
    assert live_meetings(google) == []
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT count(*) FROM sessions WHERE tutor_id = :t"), {"t": tutor.id}
        ).scalar_one()
    assert rows == 0
