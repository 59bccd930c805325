"""`relink seed demo`: demo users and sessions, real meetings at the simulator, idempotent."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine, text

from devtools.provider_sim.server import SimHandle
from devtools.seed.demo import seed_demo
from services.oauth_gateway.settings import GatewaySettings
from tests.gateway.conftest import provider_settings_for


def test_seed_demo_is_idempotent_with_real_meetings(
    gateway_settings: GatewaySettings, engine: Engine, sim: SimHandle
) -> None:
    first = seed_demo(gateway_settings, provider_settings=provider_settings_for(sim))
    assert (first.users_created, first.sessions_created) == (6, 11)
    assert first.meetings_source.startswith("real")
    again = seed_demo(gateway_settings, provider_settings=provider_settings_for(sim))
    assert (again.users_created, again.sessions_created) == (0, 0)
    with engine.connect() as conn:
        statuses: dict[str, int] = dict(
            conn.execute(
                text(
                    "SELECT s.status, count(*) FROM sessions s JOIN users u ON u.id = s.tutor_id "
                    "WHERE u.email LIKE 'ada@%' GROUP BY s.status"
                )
            ).all()
        )
        providers: dict[str, str] = dict(
            conn.execute(
                text(
                    "SELECT u.email, c.provider FROM tutor_video_provider_connections c "
                    "JOIN users u ON u.id = c.tutor_id"
                )
            ).all()
        )
        students = conn.execute(
            text("SELECT email, timezone FROM users WHERE role = 'student'")
        ).all()
    assert statuses == {"SCHEDULED": 6, "JOIN_OPEN": 1, "COMPLETED": 1, "CANCELLED": 1}
    assert providers == {
        "ada@demo.relink.example": "zoom",
        "grace@demo.relink.example": "google_meet",
    }
    assert len(students) == 3 and all(tz for _, tz in students)
    account = httpx.get(f"{sim.base_url}/_admin/accounts/zoom/ada@demo.relink.example").json()
    assert len(account["meetings"]) == 9
    httpx.post(f"{sim.base_url}/_admin/reset")


def test_seed_demo_without_the_simulator_uses_placeholders(
    gateway_settings: GatewaySettings, engine: Engine
) -> None:
    from services.providers import ProviderSettings

    nowhere = "http://127.0.0.1:9"  # discard port: connection refused
    providers = ProviderSettings(
        zoom_auth_base=f"{nowhere}/zoom",
        zoom_api_base=f"{nowhere}/zoom/v2",
        google_auth_base=f"{nowhere}/google",
        google_token_base=f"{nowhere}/google",
        google_api_base=f"{nowhere}/google",
        max_attempts=1,
    )
    report = seed_demo(gateway_settings, provider_settings=providers)
    assert report.sessions_created == 11 and report.meetings_source.startswith("placeholder")
    with engine.connect() as conn:
        links = conn.execute(text("SELECT provider, join_url FROM sessions")).all()
    assert all(url.startswith("https://") for _, url in links)
    assert {p for p, _ in links} == {"zoom", "google_meet"}
