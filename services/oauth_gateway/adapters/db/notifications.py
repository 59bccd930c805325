"""What the providers tell us: app removals and meeting deletions, each processed once."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from services.core import events
from services.core.db.models import Connection, MeetingDeletion, ProviderNotification
from services.core.db.models import Session as SessionRow
from services.core.messages import ProviderDisconnected
from services.oauth_gateway.adapters.db.common import ELIGIBLE, add_event
from services.oauth_gateway.adapters.db.deletions import deleted_by_relink


class NotificationStore:
    """Records provider notifications and applies their effect in the same transaction."""

    def __init__(
        self, session_factory: sessionmaker[Session], *, topics: events.TopicNames
    ) -> None:
        self._sessions = session_factory
        self._topics = topics

    @staticmethod
    def _first_time(
        s: Session, *, notification_id: str, provider: str, event: str, now: datetime
    ) -> ProviderNotification | None:
        """Record the notification; None when it was already processed (a replay).

        Inserted first, in the effect's own transaction: a concurrent copy waits
        on the primary key and then finds it, and a rolled-back effect leaves
        no record, so a retry by the provider is processed again.
        """
        inserted = s.execute(
            pg_insert(ProviderNotification)
            .values(id=notification_id, provider=provider, event=event, received_at=now, outcome="")
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(ProviderNotification.id)
        ).scalar_one_or_none()
        if inserted is None:
            return None
        return s.get(ProviderNotification, inserted)

    def deauthorize(
        self,
        *,
        notification_id: str,
        provider: str,
        account_id: str,
        deauthorized_at: datetime,
        now: datetime,
    ) -> str:
        """The tutor removed our app: connection disconnected, tokens erased, tutor told.

        Returns the outcome ("duplicate", "no_connection", "disconnected:N").
        """
        with self._sessions() as s, s.begin():
            record = self._first_time(
                s,
                notification_id=notification_id,
                provider=provider,
                event="app_deauthorized",
                now=now,
            )
            if record is None:
                return "duplicate"
            rows = s.scalars(
                select(Connection)
                .where(
                    Connection.provider == provider, Connection.provider_account_id == account_id
                )
                .order_by(Connection.tutor_id)
                .with_for_update()
            ).all()
            done = 0
            told: list[tuple[uuid.UUID, ProviderDisconnected]] = []
            for row in rows:
                if row.access_token_encrypted is None:
                    continue  # already forgotten (an earlier removal)
                row.access_token_encrypted = None
                row.refresh_token_encrypted = None
                row.token_expires_at = None
                row.disconnected_at = deauthorized_at
                row.disconnect_reason = "app_deauthorized"
                row.updated_at = now
                upcoming = s.scalar(
                    select(func.count())
                    .select_from(SessionRow)
                    .where(
                        SessionRow.tutor_id == row.tutor_id,
                        SessionRow.provider == provider,
                        SessionRow.status.in_(ELIGIBLE),
                        SessionRow.scheduled_start_at >= now,
                    )
                )
                told.append(
                    (
                        row.tutor_id,
                        ProviderDisconnected(
                            tutor_id=str(row.tutor_id),
                            provider=provider,
                            reason="app_deauthorized",
                            upcoming_sessions=int(upcoming or 0),
                            disconnected_at=deauthorized_at,
                        ),
                    )
                )
                done += 1
            # A connection kept for rollback on that account loses its tokens
            # too: a rollback would otherwise restore a revoked grant.
            kept = s.scalars(
                select(Connection)
                .where(
                    Connection.previous_provider == provider,
                    Connection.previous_provider_account_id == account_id,
                    Connection.previous_access_token_encrypted.is_not(None),
                )
                .with_for_update()
            ).all()
            for row in kept:
                row.previous_access_token_encrypted = None
                row.previous_refresh_token_encrypted = None
                row.previous_token_expires_at = None
                row.updated_at = now
            # The tutors' `provider.disconnected` rows last (core.outbox: the
            # outbox lock is taken after every row lock of the transaction).
            for tutor_id, payload in told:
                add_event(
                    self._topics,
                    s,
                    payload,
                    tutor_id=tutor_id,
                    now=now,
                )
            record.outcome = (
                f"disconnected:{done}"
                if rows
                else "previous_forgotten"
                if kept
                else "no_connection"
            )
            return record.outcome

    def record_meeting_deletion(
        self,
        *,
        notification_id: str,
        provider: str,
        meeting_id: str,
        deleted_at: datetime,
        now: datetime,
    ) -> str:
        """A meeting was deleted at the provider: record it against the session that uses it.

        Only a session whose CURRENT meeting it is counts, and not one relink
        itself deleted (a rollback's or a cleanup's delete also makes Zoom send
        `meeting.deleted`): those meetings are no longer any session's current
        one, or are recorded as deleted by relink in `session_migrations`.
        """
        with self._sessions() as s, s.begin():
            record = self._first_time(
                s,
                notification_id=notification_id,
                provider=provider,
                event="meeting.deleted",
                now=now,
            )
            if record is None:
                return "duplicate"
            sessions = s.scalars(
                select(SessionRow).where(
                    SessionRow.provider == provider,
                    SessionRow.meeting_external_id == meeting_id,
                    SessionRow.status.in_(ELIGIBLE),
                    SessionRow.scheduled_start_at >= now,
                )
            ).all()
            if not sessions or deleted_by_relink(s, meeting_id):
                record.outcome = "ignored"
                return record.outcome
            for row in sessions:
                s.execute(
                    pg_insert(MeetingDeletion)
                    .values(
                        session_id=row.id,
                        tutor_id=row.tutor_id,
                        provider=provider,
                        meeting_external_id=meeting_id,
                        deleted_at=deleted_at,
                        recorded_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["session_id", "meeting_external_id"])
                )
            record.outcome = f"recorded:{len(sessions)}"
            return record.outcome
