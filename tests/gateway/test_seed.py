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


def _demo_rows(engine: Engine) -> list[tuple[object, ...]]:
    """Everything the demo shows: users, connections, bookings, sessions, row for row."""
    with engine.connect() as conn:
        return [
            *conn.execute(text("SELECT id, role, name, email, timezone FROM users ORDER BY id")),
            *conn.execute(
                text(
                    "SELECT tutor_id, provider, provider_account_email, generation "
                    "FROM tutor_video_provider_connections ORDER BY tutor_id"
                )
            ),
            *conn.execute(text("SELECT id, topic, duration_minutes FROM bookings ORDER BY id")),
            *conn.execute(
                text(
                    "SELECT id, booking_id, provider, meeting_external_id, join_url, status, "
                    "scheduled_start_at FROM sessions ORDER BY id"
                )
            ),
        ]


def _ada_upcoming(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.tutor_id "
                    "WHERE u.email LIKE 'ada@%' AND s.scheduled_start_at > now() "
                    "AND s.status IN ('SCHEDULED', 'JOIN_OPEN')"
                )
            ).scalar_one()
        )


def test_seed_demo_twice_leaves_the_same_demo(
    gateway_settings: GatewaySettings, engine: Engine, sim: SimHandle
) -> None:
    providers = provider_settings_for(sim)
    seed_demo(gateway_settings, provider_settings=providers)
    first = _demo_rows(engine)
    again = seed_demo(gateway_settings, provider_settings=providers)
    assert again.sessions_refreshed == 0
    assert _demo_rows(engine) == first
    assert _ada_upcoming(engine) == 6
    httpx.post(f"{sim.base_url}/_admin/reset")


def test_seed_demo_refreshes_a_stale_demo_without_doubling_it(
    gateway_settings: GatewaySettings, engine: Engine, sim: SimHandle
) -> None:
    """Seeded weeks ago (every date now past, as on a later day), seeding again places
    the demo relative to now: Ada has her six upcoming sessions again, same rows."""
    providers = provider_settings_for(sim)
    seed_demo(gateway_settings, provider_settings=providers)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE sessions SET scheduled_start_at = scheduled_start_at - interval '30 days'")
        )
    assert _ada_upcoming(engine) == 0
    with engine.connect() as conn:
        before = conn.execute(
            text("SELECT id, meeting_external_id, join_url FROM sessions ORDER BY id")
        ).all()
    report = seed_demo(gateway_settings, provider_settings=providers)
    assert _ada_upcoming(engine) == 6
    assert (report.sessions_created, report.sessions_refreshed) == (0, 11)
    with engine.connect() as conn:
        after = conn.execute(
            text("SELECT id, meeting_external_id, join_url FROM sessions ORDER BY id")
        ).all()
        past = conn.execute(
            text(
                "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.tutor_id "
                "WHERE u.email LIKE 'ada@%' AND s.scheduled_start_at < now()"
            )
        ).scalar_one()
    assert after == before and past == 2
    refreshed = _demo_rows(engine)
    seed_demo(gateway_settings, provider_settings=providers)
    assert _demo_rows(engine) == refreshed
    httpx.post(f"{sim.base_url}/_admin/reset")
