"""The inline baseline really migrates: new meetings, rows updated, the rest untouched."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg

from devtools.bench.consent import allow_consent
from tests.bench.conftest import BaselineProcess

ELIGIBLE = 5  # 4 SCHEDULED + 1 JOIN_OPEN in the future


def _seed(database_url: str) -> tuple[uuid.UUID, dict[str, uuid.UUID]]:
    """A tutor with eligible future sessions and three that must never move."""
    tutor, student, booking = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    dsn = database_url.replace("postgresql+psycopg", "postgresql")
    kept: dict[str, uuid.UUID] = {}
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO users (id, role, name, email) VALUES (%s, 'tutor', 'T', %s), "
            "(%s, 'student', 'S', %s)",
            (tutor, f"t-{tutor.hex}@example.com", student, f"s-{student.hex}@example.com"),
        )
        conn.execute(
            "INSERT INTO bookings (id, tutor_id, student_id, topic, duration_minutes) "
            "VALUES (%s, %s, %s, 'Algebra', 45)",
            (booking, tutor, student),
        )
        rows = [("SCHEDULED", "2 hours")] * 4 + [("JOIN_OPEN", "5 minutes")]
        rows += [("SCHEDULED", "-2 hours"), ("CANCELLED", "3 hours"), ("COMPLETED", "4 hours")]
        for status, offset in rows:
            sid = uuid.uuid4()
            conn.execute(
                "INSERT INTO sessions (id, tutor_id, student_id, booking_id, provider, "
                "meeting_external_id, join_url, status, scheduled_start_at, duration_minutes) "
                "VALUES (%s, %s, %s, %s, 'zoom', 'old', 'https://zoom.example/old', %s, "
                "now() + %s::interval, 45)",
                (sid, tutor, student, booking, status, offset),
            )
            if status not in ("SCHEDULED", "JOIN_OPEN") or offset.startswith("-"):
                kept[f"{status}{offset}"] = sid
    return tutor, kept


async def _connect(http: httpx.AsyncClient, tutor: uuid.UUID, provider: str) -> httpx.Response:
    start = await http.get(f"/oauth/{provider}/start", params={"tutor_id": str(tutor)})
    assert start.status_code == 302, start.text
    path = await allow_consent(http, start.headers["location"], email=f"t-{tutor.hex}@example.com")
    return await http.get(path)


async def test_switch_migrates_every_future_session_inline(
    baseline: BaselineProcess, database_url: str
) -> None:
    tutor, kept = _seed(database_url)
    async with httpx.AsyncClient(base_url=baseline.base_url, timeout=60) as http:
        first = await _connect(http, tutor, "zoom")
        assert first.status_code == 303
        assert first.headers["location"] == "/tutor/video-setup?success=true"

        switched = await _connect(http, tutor, "google_meet")
        assert switched.status_code == 303
        query = parse_qs(urlsplit(switched.headers["location"]).query)
        assert query == {"success": ["true"], "migrated": [str(ELIGIBLE)]}

    dsn = database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn) as conn:
        moved = conn.execute(
            "SELECT meeting_external_id, join_url FROM sessions "
            "WHERE tutor_id = %s AND provider = 'google_meet' AND meeting_created_at IS NOT NULL",
            (tutor,),
        ).fetchall()
        untouched = conn.execute(
            "SELECT count(*) FROM sessions WHERE id = ANY(%s) AND provider = 'zoom' "
            "AND meeting_external_id = 'old'",
            (list(kept.values()),),
        ).fetchone()
        connection = conn.execute(
            "SELECT provider FROM tutor_video_provider_connections WHERE tutor_id = %s", (tutor,)
        ).fetchone()
    assert len(moved) == ELIGIBLE
    assert untouched == (len(kept),)
    assert connection == ("google_meet",)

    async with httpx.AsyncClient(base_url=baseline.sim.base_url, timeout=10) as admin:
        account = (await admin.get(f"/_admin/accounts/google/t-{tutor.hex}@example.com")).json()
    at_google = {m["id"] for m in account["meetings"]}
    assert {external_id for external_id, _ in moved} <= at_google
    assert all(url and "/meet/" in url for _, url in moved)


async def test_replayed_state_is_rejected_and_changes_nothing(
    baseline: BaselineProcess, database_url: str
) -> None:
    tutor, _ = _seed(database_url)
    async with httpx.AsyncClient(base_url=baseline.base_url, timeout=60) as http:
        start = await http.get("/oauth/zoom/start", params={"tutor_id": str(tutor)})
        path = await allow_consent(
            http, start.headers["location"], email=f"t-{tutor.hex}@example.com"
        )
        assert (await http.get(path)).status_code == 303
        again = await http.get(path)
    assert again.status_code == 400
    assert "already used" in again.text
