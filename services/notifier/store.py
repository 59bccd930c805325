"""PostgreSQL side of the notifier: audit rows, owed emails, the facts emails need."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.dialects.postgresql import insert

from services.core.db.models import AuditEntry, NotificationState


@dataclass(frozen=True, slots=True)
class OwedEmail:
    """An email the notifier must send once: one `notifications` row."""

    change_id: uuid.UUID
    recipient: str
    recipient_name: str | None
    kind: str
    switch_id: uuid.UUID | None
    session_id: uuid.UUID | None
    message_id: str
    subject: str
    body_text: str
    body_html: str
    state: str = NotificationState.PENDING.value
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class DueEmail:
    """A PENDING email whose time to (re)try has come, locked by this transaction."""

    id: int
    recipient: str
    recipient_name: str | None
    message_id: str
    subject: str
    body_text: str
    body_html: str
    attempts: int
    created_at: datetime


class NotifierStore:
    """Queries and writes of the notifier; each method runs in the caller's transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def add_audit(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
        """Insert audit rows; a row whose event id is already there changes nothing."""
        if not rows:
            return 0
        result = conn.execute(insert(AuditEntry).on_conflict_do_nothing(), list(rows))
        return int(result.rowcount or 0)

    def session_facts(
        self,
        conn: Connection,
        *,
        student_id: uuid.UUID,
        session_id: uuid.UUID | None,
        tutor_id: uuid.UUID | None,
        switch_id: uuid.UUID | None,
    ) -> dict[str, Any] | None:
        """The student, tutor, session, booking and switch behind one session email."""
        row = (
            conn.execute(
                text(
                    "SELECT st.name AS student_name, st.email AS student_email,"
                    " st.timezone AS student_timezone, t.name AS tutor_name,"
                    " s.duration_minutes, s.status, b.topic, b.timezone AS booking_timezone,"
                    " ps.from_provider AS switch_from, ps.to_provider AS switch_to"
                    " FROM users st"
                    " LEFT JOIN sessions s ON s.id = :session_id"
                    " LEFT JOIN bookings b ON b.id = s.booking_id"
                    " LEFT JOIN users t ON t.id = :tutor_id"
                    " LEFT JOIN provider_switches ps ON ps.id = :switch_id"
                    " WHERE st.id = :student_id"
                ),
                {
                    "student_id": student_id,
                    "session_id": session_id,
                    "tutor_id": tutor_id,
                    "switch_id": switch_id,
                },
            )
            .mappings()
            .first()
        )
        return dict(row) if row is not None else None

    def tutor_and_switch(
        self, conn: Connection, *, tutor_id: uuid.UUID | None, switch_id: uuid.UUID | None
    ) -> dict[str, Any] | None:
        row = (
            conn.execute(
                text(
                    "SELECT t.name AS tutor_name, t.email AS tutor_email,"
                    " t.timezone AS tutor_timezone,"
                    " ps.from_provider, ps.to_provider"
                    " FROM users t LEFT JOIN provider_switches ps ON ps.id = :switch_id"
                    " WHERE t.id = :tutor_id"
                ),
                {"tutor_id": tutor_id, "switch_id": switch_id},
            )
            .mappings()
            .first()
        )
        return dict(row) if row is not None else None

    def owe(self, conn: Connection, email: OwedEmail) -> bool:
        """Record an email to send; False when this (change, recipient) is already recorded."""
        result = conn.execute(
            text(
                "INSERT INTO notifications (event_id, recipient, recipient_name, kind, switch_id,"
                " session_id, message_id, subject, body_text, body_html, state, last_error)"
                " VALUES (:change_id, :recipient, :recipient_name, :kind, :switch_id, :session_id,"
                " :message_id, :subject, :body_text, :body_html, :state, :last_error)"
                " ON CONFLICT (event_id, recipient) DO NOTHING"
            ),
            {
                "change_id": email.change_id,
                "recipient": email.recipient,
                "recipient_name": email.recipient_name,
                "kind": email.kind,
                "switch_id": email.switch_id,
                "session_id": email.session_id,
                "message_id": email.message_id,
                "subject": email.subject,
                "body_text": email.body_text,
                "body_html": email.body_html,
                "state": email.state,
                "last_error": email.last_error,
            },
        )
        return bool(result.rowcount)

    def settled_switches_without_summary(
        self, conn: Connection, *, lookback_days: int = 30
    ) -> list[dict[str, Any]]:
        """Switches that settled and whose tutor has not been sent a summary yet."""
        rows = conn.execute(
            text(
                "SELECT ps.id, ps.tutor_id, ps.from_provider, ps.to_provider, ps.state,"
                " ps.sessions_total, ps.sessions_migrated, ps.sessions_failed,"
                " t.name AS tutor_name, t.email AS tutor_email, t.timezone AS tutor_timezone,"
                " EXTRACT(EPOCH FROM now() - COALESCE(ps.completed_at, ps.created_at))"
                "   AS settled_for_s"
                " FROM provider_switches ps JOIN users t ON t.id = ps.tutor_id"
                " WHERE (ps.state IN ('COMPLETED', 'COMPLETED_WITH_FAILURES')"
                "   OR (ps.state = 'MIGRATING' AND ps.sessions_total > 0"
                "       AND ps.sessions_migrated + ps.sessions_failed >= ps.sessions_total))"
                " AND ps.created_at > now() - make_interval(days => :days)"
                " AND NOT EXISTS (SELECT 1 FROM notifications n"
                "   WHERE n.switch_id = ps.id AND n.kind = 'tutor_summary')"
                " ORDER BY ps.created_at"
            ),
            {"days": lookback_days},
        ).mappings()
        return [dict(r) for r in rows]

    def switch_failures(self, conn: Connection, *, switch_id: uuid.UUID) -> list[dict[str, Any]]:
        """The sessions of a switch that failed, with why: the migrator's record first,
        the audit trail's `session.failed` events when the migrator kept none."""
        rows = conn.execute(
            text(
                "SELECT s.scheduled_start_at, b.topic, st.name AS student_name,"
                " COALESCE(NULLIF(sm.last_error, ''), 'not moved') AS reason"
                " FROM session_migrations sm"
                " LEFT JOIN sessions s ON s.id = sm.session_id"
                " LEFT JOIN bookings b ON b.id = s.booking_id"
                " LEFT JOIN users st ON st.id = s.student_id"
                " WHERE sm.switch_id = :switch_id AND sm.state = 'FAILED'"
                " ORDER BY sm.scheduled_start_at"
            ),
            {"switch_id": switch_id},
        ).mappings()
        found = [dict(r) for r in rows]
        if found:
            return found
        rows = conn.execute(
            text(
                "SELECT DISTINCT ON (a.session_id)"
                " (a.payload->>'scheduled_start_at')::timestamptz AS scheduled_start_at,"
                " b.topic, st.name AS student_name,"
                " COALESCE(NULLIF(a.payload->>'detail', ''), a.payload->>'reason') AS reason"
                " FROM audit_log a"
                " LEFT JOIN sessions s ON s.id = a.session_id"
                " LEFT JOIN bookings b ON b.id = s.booking_id"
                " LEFT JOIN users st ON st.id = s.student_id"
                " WHERE a.switch_id = :switch_id AND a.event_type = 'session.failed'"
                " AND NOT EXISTS (SELECT 1 FROM audit_log m WHERE m.switch_id = a.switch_id"
                "   AND m.session_id = a.session_id AND m.event_type = 'session.migrated')"
                " ORDER BY a.session_id, a.event_time DESC"
            ),
            {"switch_id": switch_id},
        ).mappings()
        return sorted((dict(r) for r in rows), key=lambda r: r["scheduled_start_at"])

    def next_due(self, conn: Connection) -> DueEmail | None:
        """Lock the oldest due email; another notifier skips it while we send."""
        row = (
            conn.execute(
                text(
                    "SELECT id, recipient, recipient_name, message_id, subject, body_text,"
                    " body_html,"
                    " attempts, created_at FROM notifications"
                    " WHERE state = 'PENDING' AND next_attempt_at <= now()"
                    " ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
                )
            )
            .mappings()
            .first()
        )
        return DueEmail(**row) if row is not None else None

    def mark_sent(self, conn: Connection, email_id: int) -> None:
        conn.execute(
            text(
                "UPDATE notifications SET state = 'SENT', sent_at = now(),"
                " attempts = attempts + 1, last_error = NULL WHERE id = :id"
            ),
            {"id": email_id},
        )

    def retry_later(self, conn: Connection, email_id: int, *, delay_s: float, error: str) -> None:
        conn.execute(
            text(
                "UPDATE notifications SET attempts = attempts + 1, last_error = :error,"
                " next_attempt_at = now() + make_interval(secs => :delay) WHERE id = :id"
            ),
            {"id": email_id, "delay": delay_s, "error": error[:1000]},
        )

    def mark_failed(self, conn: Connection, email_id: int, *, error: str) -> None:
        conn.execute(
            text(
                "UPDATE notifications SET state = 'FAILED_PERMANENT', attempts = attempts + 1,"
                " last_error = :error WHERE id = :id"
            ),
            {"id": email_id, "error": error[:1000]},
        )

    def seconds_to_next_due(self, conn: Connection) -> float | None:
        value = conn.execute(
            text(
                "SELECT EXTRACT(EPOCH FROM min(next_attempt_at) - now()) FROM notifications"
                " WHERE state = 'PENDING'"
            )
        ).scalar()
        return None if value is None else max(0.0, float(value))

    def tutor_history(
        self, conn: Connection, *, tutor_id: uuid.UUID, limit: int
    ) -> list[dict[str, Any]]:
        rows = conn.execute(
            text(
                "SELECT event_time, event_type, switch_id, session_id, from_provider,"
                " to_provider, outcome, event_id FROM audit_log WHERE tutor_id = :tutor_id"
                " ORDER BY event_time, event_id LIMIT :limit"
            ),
            {"tutor_id": tutor_id, "limit": limit},
        ).mappings()
        return [dict(r) for r in rows]
