"""The schema on a real PostgreSQL: migrations both ways, invariants as constraints."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import psycopg
import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from services.core.db import migrate
from services.core.db.engine import make_engine

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class
    from tests.conftest import TestInfrastructure

TABLES = {
    "api_keys",
    "idempotent_requests",
    "tracking",
    "provider_holds",
    "webhook_endpoints",
    "webhook_deliveries",
    "webhook_attempts",
    "users",
    "tutor_video_provider_connections",
    "sessions",
    "bookings",
    "outbox",
    "provider_switches",
    "switch_requests",
    "session_migrations",
    "audit_log",
    "notifications",
    "oauth_states",
    "provider_quota_usage",
    "provider_notifications",
    "meeting_deletions",
    "provider_channels",
}


@pytest.fixture
def empty_database_url(devstack: TestInfrastructure) -> Iterator[str]:
    name = f"relink_m_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(devstack.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = devstack.database_url.rpartition("/")[0]
    yield f"{base}/{name}"
    with psycopg.connect(devstack.admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_to_head_and_downgrade_to_base(empty_database_url: str) -> None:
    assert migrate.current(empty_database_url) is None
    migrate.upgrade(empty_database_url)
    assert migrate.current(empty_database_url) == migrate.head()
    assert _tables(empty_database_url) == TABLES
    migrate.downgrade(empty_database_url)
    assert migrate.current(empty_database_url) is None
    assert _tables(empty_database_url) == set()
    # and up again: the downgrade left nothing behind that blocks a re-run
    migrate.upgrade(empty_database_url)
    assert _tables(empty_database_url) == TABLES


def test_0013_gives_every_existing_switch_its_request(empty_database_url: str) -> None:
    """Switches made before the split keep their history: each gets the request it came from."""
    migrate.upgrade(empty_database_url, revision="0012")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            tutor = _user(conn)
            ids = {state: uuid.uuid4() for state in ("COMPLETED", "ROLLED_BACK", "ROLLING_BACK")}
            for n, (state, sw) in enumerate(ids.items()):
                conn.execute(
                    text(
                        "INSERT INTO provider_switches (id, tutor_id, from_provider, to_provider, "
                        "generation, state, rollback_deadline, rolled_back_at) VALUES (:id, :t, "
                        "'zoom', 'google_meet', :g, :s, now() + interval '1 day', "
                        "CASE WHEN :s = 'ROLLED_BACK' THEN now() END)"
                    ),
                    {"id": sw, "t": tutor, "g": n + 2, "s": state},
                )
        migrate.upgrade(empty_database_url)
        with engine.connect() as conn:
            requests = {
                r.id: r
                for r in conn.execute(
                    text(
                        "SELECT r.*, p.created_at FROM switch_requests r "
                        "JOIN provider_switches p ON p.id = r.id"
                    )
                )
            }
        assert set(requests) == set(ids.values())
        done = requests[ids["COMPLETED"]]
        assert (done.tutor_id, done.to_provider, done.generation) == (tutor, "google_meet", 2)
        assert done.requested_at == done.created_at and done.rollback_deadline is not None
        assert done.rollback_requested_at is None
        assert requests[ids["ROLLED_BACK"]].rollback_requested_at is not None
        assert requests[ids["ROLLING_BACK"]].rollback_requested_at is not None
        # a progress row without a request is refused from now on
        with pytest.raises(IntegrityError, match="switch_requests"), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO provider_switches (id, tutor_id, from_provider, to_provider, "
                    "generation) VALUES (gen_random_uuid(), :t, 'zoom', 'google_meet', 9)"
                ),
                {"t": tutor},
            )
    finally:
        engine.dispose()


def _user(conn, role: str = "tutor") -> uuid.UUID:  # type: ignore[no-untyped-def]
    uid = uuid.uuid4()
    conn.execute(
        text("INSERT INTO users (id, role, name, email) VALUES (:id, :role, 'n', :email)"),
        {"id": uid, "role": role, "email": f"{uid}@example.test"},
    )
    return uid


def _session(conn, tutor: uuid.UUID, student: uuid.UUID, **over) -> uuid.UUID:  # type: ignore[no-untyped-def]
    booking = uuid.uuid4()
    conn.execute(
        text(
            "INSERT INTO bookings (id, tutor_id, student_id, topic, duration_minutes) "
            "VALUES (:id, :t, :s, 'Algebra', 60)"
        ),
        {"id": booking, "t": tutor, "s": student},
    )
    sid = uuid.uuid4()
    values = {
        "id": sid,
        "t": tutor,
        "s": student,
        "b": booking,
        "provider": "zoom",
        "status": "SCHEDULED",
        "start": datetime.now(UTC) + timedelta(days=1),
    }
    values.update(over)
    conn.execute(
        text(
            "INSERT INTO sessions (id, tutor_id, student_id, booking_id, provider, status, "
            "scheduled_start_at, duration_minutes) "
            "VALUES (:id, :t, :s, :b, :provider, :status, :start, 60)"
        ),
        values,
    )
    return sid


def _connection(conn, tutor: uuid.UUID, provider: str = "zoom") -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        text(
            "INSERT INTO tutor_video_provider_connections (tutor_id, provider, "
            "access_token_encrypted) VALUES (:t, :p, '\\x00')"
        ),
        {"t": tutor, "p": provider},
    )


def _switch(conn, tutor: uuid.UUID) -> uuid.UUID:  # type: ignore[no-untyped-def]
    sw = uuid.uuid4()
    for table in ("switch_requests", "provider_switches"):
        conn.execute(
            text(
                f"INSERT INTO {table} (id, tutor_id, from_provider, to_provider, generation) "
                "VALUES (:id, :t, 'zoom', 'google_meet', 2)"
            ),
            {"id": sw, "t": tutor},
        )
    return sw


def test_one_connection_per_tutor(engine: Engine) -> None:
    with engine.begin() as conn:
        tutor = _user(conn)
        _connection(conn, tutor)
    with pytest.raises(IntegrityError, match="tutor_id"), engine.begin() as conn:
        _connection(conn, tutor, provider="google_meet")


def test_one_migration_per_switch_and_session(engine: Engine) -> None:
    with engine.begin() as conn:
        tutor, student = _user(conn), _user(conn, "student")
        session = _session(conn, tutor, student)
        switch = _switch(conn, tutor)
    insert = text(
        "INSERT INTO session_migrations (switch_id, session_id, tutor_id, scheduled_start_at, "
        "to_provider) VALUES (:sw, :s, :t, now(), 'google_meet')"
    )
    params = {"sw": switch, "s": session, "t": tutor}
    with engine.begin() as conn:
        conn.execute(insert, params)
    with pytest.raises(IntegrityError, match="switch_id"), engine.begin() as conn:
        conn.execute(insert, params)


def test_one_audit_row_per_event(engine: Engine) -> None:
    insert = text(
        "INSERT INTO audit_log (event_id, event_source, event_type, event_time, payload) "
        "VALUES (:id, 'relink/test', 'provider.switched', now(), '{}')"
    )
    event = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(insert, {"id": event})
    with pytest.raises(IntegrityError, match="pk_audit_log"), engine.begin() as conn:
        conn.execute(insert, {"id": event})


def test_one_notification_per_event_and_recipient(engine: Engine) -> None:
    insert = text(
        "INSERT INTO notifications (event_id, recipient, kind) VALUES (:e, :r, 'session_moved')"
    )
    event = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(insert, {"e": event, "r": "ada@example.test"})
        conn.execute(insert, {"e": event, "r": "bob@example.test"})
    with pytest.raises(IntegrityError, match="event_id"), engine.begin() as conn:
        conn.execute(insert, {"e": event, "r": "ada@example.test"})


def test_outbox_event_id_unique(engine: Engine) -> None:
    insert = text(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic, payload) "
        "VALUES (:e, 'tutor', 't1', 'provider.switched', 'provider.switched', '{}')"
    )
    event = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(insert, {"e": event})
    with pytest.raises(IntegrityError, match="event_id"), engine.begin() as conn:
        conn.execute(insert, {"e": event})


@pytest.mark.parametrize(
    ("column", "value"),
    [("status", "DELETED"), ("provider", "webex")],
)
def test_session_enums_are_checked(engine: Engine, column: str, value: str) -> None:
    with engine.begin() as conn:
        tutor, student = _user(conn), _user(conn, "student")
    with pytest.raises(IntegrityError, match="_valid"), engine.begin() as conn:
        _session(conn, tutor, student, **{column: value})


def test_switch_to_the_same_provider_is_rejected(engine: Engine) -> None:
    with engine.begin() as conn:
        tutor = _user(conn)
    for table in ("switch_requests", "provider_switches"):
        with pytest.raises(IntegrityError, match="providers_differ"), engine.begin() as conn:
            conn.execute(
                text(
                    f"INSERT INTO {table} (tutor_id, from_provider, to_provider, "
                    "generation, id) VALUES (:t, 'zoom', 'zoom', 2, gen_random_uuid())"
                ),
                {"t": tutor},
            )


def test_migrator_query_uses_the_tutor_status_start_index(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = conn.execute(
            text(
                "EXPLAIN SELECT id FROM sessions WHERE tutor_id = gen_random_uuid() "
                "AND status IN ('SCHEDULED', 'JOIN_OPEN') AND scheduled_start_at >= now() "
                "ORDER BY scheduled_start_at LIMIT 100"
            )
        ).all()
    assert "ix_sessions_tutor_status_start" in "\n".join(row[0] for row in plan)


def test_outbox_insert_notifies_the_relay_channel(database_url: str) -> None:
    dsn = database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN relink_outbox")
        with psycopg.connect(dsn, autocommit=True) as writer:
            writer.execute(
                "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic, "
                "payload) VALUES (gen_random_uuid(), 'tutor', 't', 'x', 'x', '{}')"
            )
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notes] == ["relink_outbox"]
