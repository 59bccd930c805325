"""Meetings deleted at the provider under a session, and their replacement."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from services.core import events
from services.core.db.models import Booking, MeetingDeletion, SessionMigration, User
from services.core.db.models import Session as SessionRow
from services.core.messages import SessionMeetingRecreated
from services.oauth_gateway.adapters.db.common import ELIGIBLE, add_event, lock_connection
from services.oauth_gateway.adapters.web.views import DeletedMeetingView
from services.providers import Meeting


class DeletionStore:
    """Records, lists and resolves meeting deletions."""

    def __init__(
        self, session_factory: sessionmaker[Session], *, topics: events.TopicNames
    ) -> None:
        self._sessions = session_factory
        self._topics = topics

    def record_deleted_events(
        self,
        *,
        tutor_id: uuid.UUID,
        provider: str,
        gone: list[tuple[uuid.UUID, str]],
        now: datetime,
    ) -> int:
        """Record events found gone at the provider against sessions that still use them."""
        recorded = 0
        with self._sessions() as s, s.begin():
            for session_id, meeting_id in gone:
                session = s.get(SessionRow, session_id)
                if (
                    session is None
                    or session.tutor_id != tutor_id
                    or session.meeting_external_id != meeting_id
                    or deleted_by_relink(s, meeting_id)
                ):
                    continue
                inserted = s.execute(
                    pg_insert(MeetingDeletion)
                    .values(
                        session_id=session_id,
                        tutor_id=tutor_id,
                        provider=provider,
                        meeting_external_id=meeting_id,
                        deleted_at=now,
                        recorded_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["session_id", "meeting_external_id"])
                    .returning(MeetingDeletion.id)
                ).scalar_one_or_none()
                recorded += inserted is not None
        return recorded

    def open_deletions(self, tutor_id: uuid.UUID, *, now: datetime) -> list[DeletedMeetingView]:
        """The tutor's upcoming sessions whose current meeting was deleted at the provider."""
        with self._sessions() as s:
            rows = s.execute(
                select(MeetingDeletion, SessionRow.scheduled_start_at, Booking.topic, User.name)
                .join(SessionRow, SessionRow.id == MeetingDeletion.session_id)
                .join(Booking, Booking.id == SessionRow.booking_id)
                .join(User, User.id == SessionRow.student_id)
                .where(
                    MeetingDeletion.tutor_id == tutor_id,
                    MeetingDeletion.resolved_at.is_(None),
                    # Still the session's meeting: a move or a rollback since replaced it.
                    SessionRow.meeting_external_id == MeetingDeletion.meeting_external_id,
                    SessionRow.provider == MeetingDeletion.provider,
                    SessionRow.status.in_(ELIGIBLE),
                    SessionRow.scheduled_start_at >= now,
                )
                .order_by(SessionRow.scheduled_start_at)
                .limit(100)
            ).all()
            return [
                DeletedMeetingView(
                    id=d.id,
                    session_id=d.session_id,
                    provider=d.provider,
                    meeting_external_id=d.meeting_external_id,
                    deleted_at=d.deleted_at,
                    scheduled_start_at=start,
                    topic=topic,
                    student_name=student,
                )
                for d, start, topic, student in rows
            ]

    def deletion(self, *, tutor_id: uuid.UUID, session_id: uuid.UUID) -> MeetingDeletion | None:
        """The open deletion of one of the tutor's sessions that still uses that meeting."""
        with self._sessions() as s:
            return s.scalars(
                select(MeetingDeletion)
                .join(SessionRow, SessionRow.id == MeetingDeletion.session_id)
                .where(
                    MeetingDeletion.session_id == session_id,
                    MeetingDeletion.tutor_id == tutor_id,
                    MeetingDeletion.resolved_at.is_(None),
                    SessionRow.meeting_external_id == MeetingDeletion.meeting_external_id,
                )
                .order_by(MeetingDeletion.id.desc())
                .limit(1)
            ).one_or_none()

    def replace_deleted_meeting(
        self,
        *,
        deletion_id: int,
        tutor_id: uuid.UUID,
        meeting: Meeting,
        generation: int,
        now: datetime,
    ) -> bool:
        """Give the session its re-created meeting, unless anything changed since it was made.

        The connection row is locked (the per-tutor lock every writer takes):
        a switch that committed meanwhile moves the session itself (False:
        the caller deletes the meeting it made).
        """
        with self._sessions() as s, s.begin():
            conn = lock_connection(s, tutor_id)
            deletion = s.get(MeetingDeletion, deletion_id, with_for_update=True)
            if (
                conn is None
                or deletion is None
                or deletion.resolved_at is not None
                or conn.generation != generation
                or conn.provider != meeting.provider
            ):
                return False
            session = s.get(SessionRow, deletion.session_id, with_for_update=True)
            if (
                session is None
                or session.meeting_external_id != deletion.meeting_external_id
                or session.status not in ELIGIBLE
            ):
                return False
            session.meeting_external_id = meeting.external_id
            session.join_url = meeting.join_url
            session.provider = meeting.provider
            session.meeting_created_at = now
            session.updated_at = now
            deletion.resolved_at = now
            deletion.new_meeting_external_id = meeting.external_id
            if meeting.join_url:
                add_event(
                    self._topics,
                    s,
                    SessionMeetingRecreated(
                        tutor_id=str(tutor_id),
                        session_id=str(session.id),
                        student_id=str(session.student_id),
                        scheduled_start_at=session.scheduled_start_at,
                        provider=meeting.provider,
                        meeting_external_id=meeting.external_id,
                        join_url=meeting.join_url,
                        deleted_meeting_external_id=deletion.meeting_external_id,
                        recreated_at=now,
                    ),
                    tutor_id=tutor_id,
                    now=now,
                )
            return True


def deleted_by_relink(s: Session, meeting_id: str) -> bool:
    """Whether a rollback or a cleanup of relink's recorded deleting this meeting."""
    return bool(
        s.scalar(
            select(func.count())
            .select_from(SessionMigration)
            .where(
                (
                    (SessionMigration.new_meeting_external_id == meeting_id)
                    & (SessionMigration.new_meeting_deleted_at.is_not(None))
                )
                | (
                    (SessionMigration.previous_meeting_external_id == meeting_id)
                    & (SessionMigration.previous_meeting_deleted_at.is_not(None))
                )
            )
        )
    )
