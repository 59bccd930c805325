"""PostgreSQL side of the notifier: audit rows, owed emails, the facts emails need.

`NotifierDb` is the live loop's store: SQLAlchemy 2 Core/ORM expressions over
`services.core.db.models`, in sessions from `make_session_factory`; each method runs
in the caller's transaction (`transaction()`, opened by the use case).
`AuditBulkStore` is the replay's bulk side: raw psycopg for COPY and a server-side
cursor, the one thing SQLAlchemy does not do well.

Constant predicates are rendered inline (`_const`), as the hand-written SQL had them,
so the planner still matches the partial index `ix_notifications_due`
(whose WHERE names the pending state as a constant) once psycopg prepares a statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import DateTime, extract, literal, select, update
from sqlalchemy import func as sql
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import BindParameter

from services.core.db.engine import TransactionalStore, libpq_conninfo
from services.core.db.models import (
    AuditEntry,
    Booking,
    MigrationState,
    Notification,
    NotificationState,
    ProviderSwitch,
    SwitchRequest,
    User,
)
from services.core.db.models import Session as SessionRow
from services.core.db.models import SessionMigration as Migration
from services.core.events import EventType
from services.notifier.domain import AUDIT_COLUMNS

# How many characters of an SMTP error are kept in `notifications.last_error`.
ERROR_CHARS = 1000


def _const(value: str) -> BindParameter[str]:
    """A constant rendered into the SQL text (not a bound parameter)."""
    return literal(value, literal_execute=True)


def _param(value: Any, like: Any) -> BindParameter[Any]:
    """A bound parameter compared with `=` even when None (never turned into IS NULL)."""
    return literal(value, like.type)


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
    # the student's calendar update (iCalendar text), rendered with the email
    calendar: str | None = None


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
    # for the log line: what the email is about (never its address or links)
    kind: str = ""
    switch_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    calendar: str | None = None


class NotifierDb(TransactionalStore):
    """Queries and writes of the notifier; each method runs in the caller's transaction."""

    def add_audit(self, s: Session, rows: Sequence[dict[str, Any]]) -> int:
        """Insert audit rows; a row whose event id is already there changes nothing."""
        if not rows:
            return 0
        result = s.execute(insert(AuditEntry).on_conflict_do_nothing(), list(rows))
        return int(getattr(result, "rowcount", 0) or 0)

    def session_facts(
        self,
        s: Session,
        *,
        student_id: uuid.UUID,
        session_id: uuid.UUID | None,
        tutor_id: uuid.UUID | None,
        switch_id: uuid.UUID | None,
    ) -> dict[str, Any] | None:
        """The student, tutor, session, booking and switch behind one session email."""
        student, tutor = aliased(User), aliased(User)
        query = (
            select(
                student.name.label("student_name"),
                student.email.label("student_email"),
                student.timezone.label("student_timezone"),
                tutor.name.label("tutor_name"),
                tutor.email.label("tutor_email"),
                SessionRow.booking_id,
                SessionRow.external_id.label("session_external_id"),
                SessionRow.duration_minutes,
                SessionRow.status,
                Booking.topic,
                Booking.timezone.label("booking_timezone"),
                SwitchRequest.from_provider.label("switch_from"),
                SwitchRequest.to_provider.label("switch_to"),
            )
            .select_from(student)
            .outerjoin(SessionRow, SessionRow.id == _param(session_id, SessionRow.id))
            .outerjoin(Booking, Booking.id == SessionRow.booking_id)
            .outerjoin(tutor, tutor.id == _param(tutor_id, tutor.id))
            .outerjoin(SwitchRequest, SwitchRequest.id == _param(switch_id, SwitchRequest.id))
            .where(student.id == _param(student_id, student.id))
        )
        row = s.execute(query).mappings().first()
        return dict(row) if row is not None else None

    # -- what an event claims, as the database knows it (nothing that arrives is trusted) --

    def migration_rows(
        self, s: Session, *, switch_id: uuid.UUID, session_id: uuid.UUID
    ) -> list[dict[str, Any]]:
        """The migration rows of a session in a switch, with the session's and switch's owners."""
        query = (
            select(
                Migration.tutor_id,
                Migration.new_meeting_external_id,
                Migration.new_join_url,
                Migration.previous_meeting_external_id,
                Migration.previous_join_url,
                SessionRow.tutor_id.label("session_tutor_id"),
                SessionRow.student_id,
                ProviderSwitch.tutor_id.label("switch_tutor_id"),
            )
            .join(SessionRow, SessionRow.id == Migration.session_id)
            .join(ProviderSwitch, ProviderSwitch.id == Migration.switch_id)
            .where(Migration.switch_id == switch_id, Migration.session_id == session_id)
            .order_by(Migration.id)
        )
        return [dict(r) for r in s.execute(query).mappings()]

    def current_meeting(self, s: Session, *, session_id: uuid.UUID) -> dict[str, Any] | None:
        """A session's owners, status and the meeting it has now."""
        query = select(
            SessionRow.tutor_id.label("session_tutor_id"),
            SessionRow.student_id,
            SessionRow.meeting_external_id,
            SessionRow.join_url,
            SessionRow.status,
        ).where(SessionRow.id == session_id)
        row = s.execute(query).mappings().first()
        return dict(row) if row is not None else None

    def switch_owner(self, s: Session, *, switch_id: uuid.UUID) -> uuid.UUID | None:
        """The tutor a switch belongs to (None: no such switch): the gateway's request,
        there before the migrator has handled it."""
        owner: uuid.UUID | None = s.scalar(
            select(SwitchRequest.tutor_id).where(SwitchRequest.id == switch_id)
        )
        return owner

    def is_tutor(self, s: Session, *, user_id: uuid.UUID) -> bool:
        role = s.scalar(select(User.role).where(User.id == user_id))
        return role == "tutor"

    def tutor_and_switch(
        self, s: Session, *, tutor_id: uuid.UUID | None, switch_id: uuid.UUID | None
    ) -> dict[str, Any] | None:
        query = (
            select(
                User.name.label("tutor_name"),
                User.email.label("tutor_email"),
                User.timezone.label("tutor_timezone"),
                SwitchRequest.from_provider,
                SwitchRequest.to_provider,
            )
            .select_from(User)
            .outerjoin(SwitchRequest, SwitchRequest.id == _param(switch_id, SwitchRequest.id))
            .where(User.id == _param(tutor_id, User.id))
        )
        row = s.execute(query).mappings().first()
        return dict(row) if row is not None else None

    def owe(self, s: Session, email: OwedEmail) -> bool:
        """Record an email to send; False when this (change, recipient) is already recorded."""
        result = s.execute(
            insert(Notification)
            .values(
                event_id=email.change_id,
                recipient=email.recipient,
                recipient_name=email.recipient_name,
                kind=email.kind,
                switch_id=email.switch_id,
                session_id=email.session_id,
                message_id=email.message_id,
                subject=email.subject,
                body_text=email.body_text,
                body_html=email.body_html,
                state=email.state,
                last_error=email.last_error,
                calendar=email.calendar,
            )
            .on_conflict_do_nothing(index_elements=["event_id", "recipient"])
        )
        return bool(getattr(result, "rowcount", 0))

    def next_calendar_sequence(self, s: Session, *, session_id: uuid.UUID) -> int:
        """The SEQUENCE of a session's next calendar update: 1 + the changes that carried one.

        Derived from the rows themselves (each change's row is written once, ON CONFLICT DO
        NOTHING), so it only grows, across moves, rollbacks and re-creations alike, and a
        redelivered change adds nothing. A transaction-scoped advisory lock per session
        makes two notifiers recording changes of one session at once count in turn.
        """
        s.execute(
            select(sql.pg_advisory_xact_lock(sql.hashtextextended(f"calendar:{session_id}", 0)))
        )
        n = Notification
        done = s.scalar(
            select(sql.count(sql.distinct(n.event_id))).where(
                n.session_id == session_id, n.calendar.is_not(None)
            )
        )
        return int(done or 0) + 1

    def switch_row(self, s: Session, *, switch_id: uuid.UUID) -> dict[str, Any] | None:
        """A switch as the database holds it now (owner, providers, state, counts)."""
        ps = ProviderSwitch
        row = (
            s.execute(
                select(
                    ps.tutor_id,
                    ps.from_provider,
                    ps.to_provider,
                    ps.state,
                    ps.sessions_total,
                    ps.sessions_migrated,
                    ps.sessions_failed,
                ).where(ps.id == switch_id)
            )
            .mappings()
            .first()
        )
        return dict(row) if row is not None else None

    def switch_failures(self, s: Session, *, switch_id: uuid.UUID) -> list[dict[str, Any]]:
        """The sessions of a switch that failed, with why: the migrator's record first,
        the audit trail's `session.failed` events when the migrator kept none."""
        student = aliased(User)
        recorded = (
            select(
                SessionRow.scheduled_start_at,
                Booking.topic,
                student.name.label("student_name"),
                sql.coalesce(sql.nullif(Migration.last_error, ""), "not moved").label("reason"),
            )
            .select_from(Migration)
            .outerjoin(SessionRow, SessionRow.id == Migration.session_id)
            .outerjoin(Booking, Booking.id == SessionRow.booking_id)
            .outerjoin(student, student.id == SessionRow.student_id)
            .where(
                Migration.switch_id == switch_id,
                Migration.state == _const(MigrationState.FAILED.value),
            )
            .order_by(Migration.scheduled_start_at)
        )
        found = [dict(r) for r in s.execute(recorded).mappings()]
        if found:
            return found
        a, m = aliased(AuditEntry), aliased(AuditEntry)
        migrated_later = (
            select(literal(1))
            .select_from(m)
            .where(
                m.switch_id == a.switch_id,
                m.session_id == a.session_id,
                m.event_type == _const(EventType.SESSION_MIGRATED.value),
            )
            .exists()
        )
        from_audit = (
            select(
                a.payload["scheduled_start_at"]
                .astext.cast(DateTime(timezone=True))
                .label("scheduled_start_at"),
                Booking.topic,
                student.name.label("student_name"),
                sql.coalesce(
                    sql.nullif(a.payload["detail"].astext, ""), a.payload["reason"].astext
                ).label("reason"),
            )
            .ext(distinct_on(a.session_id))
            .select_from(a)
            .outerjoin(SessionRow, SessionRow.id == a.session_id)
            .outerjoin(Booking, Booking.id == SessionRow.booking_id)
            .outerjoin(student, student.id == SessionRow.student_id)
            .where(
                a.switch_id == switch_id,
                a.event_type == _const(EventType.SESSION_FAILED.value),
                ~migrated_later,
            )
            .order_by(a.session_id, a.event_time.desc())
        )
        rows = s.execute(from_audit).mappings()
        return sorted((dict(r) for r in rows), key=lambda r: r["scheduled_start_at"])

    def next_due(self, s: Session) -> DueEmail | None:
        """Lock the oldest due email; another notifier skips it while we send."""
        n = Notification
        query = (
            select(
                n.id,
                n.recipient,
                n.recipient_name,
                n.message_id,
                n.subject,
                n.body_text,
                n.body_html,
                n.attempts,
                n.created_at,
                n.kind,
                n.switch_id,
                n.session_id,
                n.calendar,
            )
            .where(
                n.state == _const(NotificationState.PENDING.value),
                n.next_attempt_at <= sql.now(),
            )
            .order_by(n.next_attempt_at, n.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        row = s.execute(query).mappings().first()
        return DueEmail(**row) if row is not None else None

    def mark_sent(self, s: Session, email_id: int) -> None:
        self._update(
            s,
            email_id,
            state=NotificationState.SENT.value,
            sent_at=sql.now(),
            attempts=Notification.attempts + 1,
            last_error=None,
        )

    def retry_later(self, s: Session, email_id: int, *, delay_s: float, error: str) -> None:
        self._update(
            s,
            email_id,
            attempts=Notification.attempts + 1,
            last_error=error[:ERROR_CHARS],
            next_attempt_at=sql.now() + timedelta(seconds=delay_s),
        )

    def mark_failed(self, s: Session, email_id: int, *, error: str) -> None:
        self._update(
            s,
            email_id,
            state=NotificationState.FAILED_PERMANENT.value,
            attempts=Notification.attempts + 1,
            last_error=error[:ERROR_CHARS],
        )

    def _update(self, s: Session, email_id: int, **values: Any) -> None:
        # No ORM objects are loaded in these sessions: nothing to synchronize.
        s.execute(
            update(Notification)
            .where(Notification.id == email_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    def seconds_to_next_due(self, s: Session) -> float | None:
        value = s.execute(
            select(extract("epoch", sql.min(Notification.next_attempt_at) - sql.now())).where(
                Notification.state == _const(NotificationState.PENDING.value)
            )
        ).scalar()
        return None if value is None else max(0.0, float(value))

    def tutor_history(self, s: Session, *, tutor_id: uuid.UUID, limit: int) -> list[dict[str, Any]]:
        a = AuditEntry
        query = (
            select(
                a.event_time,
                a.event_type,
                a.switch_id,
                a.session_id,
                a.from_provider,
                a.to_provider,
                a.outcome,
                a.event_id,
            )
            .where(a.tutor_id == tutor_id)
            .order_by(a.event_time, a.event_id)
            .limit(limit)
        )
        return [dict(r) for r in s.execute(query).mappings()]


_COLUMN_LIST = ", ".join(AUDIT_COLUMNS)


class AuditBulkStore:
    """The audit replay's writes and the verification's read, over raw psycopg.

    Rows are written with COPY into a temporary table and one INSERT … SELECT per
    batch: a round trip per row would cap the replay at a few thousand events a second.
    """

    def __init__(self, database_url: str) -> None:
        self._conninfo = libpq_conninfo(database_url)

    @contextmanager
    def replay_writer(self) -> Iterator[AuditReplayWriter]:
        with psycopg.connect(self._conninfo) as conn:
            conn.execute(
                "CREATE TEMP TABLE audit_replay (LIKE audit_log INCLUDING DEFAULTS)"
                " ON COMMIT DELETE ROWS"
            )
            conn.commit()
            yield AuditReplayWriter(conn)

    def audit_rows(
        self, *, since: datetime | None, columns: Sequence[str]
    ) -> Iterator[dict[str, Any]]:
        """Every `audit_log` row (since `since`, by event time), streamed, as dicts."""
        query = f"SELECT {', '.join(('event_id', *columns))} FROM audit_log"
        params: tuple[Any, ...] = ()
        if since is not None:
            query += " WHERE event_time >= %s"
            params = (since,)
        with psycopg.connect(self._conninfo) as conn, conn.cursor(name="audit_verify") as cur:
            cur.execute(query, params)
            names = [d.name for d in cur.description or []]
            for values in cur:
                yield dict(zip(names, values, strict=True))


class AuditReplayWriter:
    """One replay's connection, with its temporary table."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def write(self, rows: list[tuple[Any, ...]]) -> int:
        """COPY rows in and insert those not there yet, in one transaction; how many were new."""
        with self._conn.cursor() as cur:
            with cur.copy(f"COPY audit_replay ({_COLUMN_LIST}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                f"INSERT INTO audit_log ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM audit_replay"
                " ON CONFLICT (event_id) DO NOTHING"
            )
            inserted = cur.rowcount
        self._conn.commit()
        return inserted
