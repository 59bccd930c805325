"""Bookings and the sessions they schedule."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.core.db.models import Booking, SessionStatus, User
from services.core.db.models import Session as SessionRow
from services.oauth_gateway.adapters.db.common import ELIGIBLE, lock_connection
from services.oauth_gateway.adapters.web.views import SessionView
from services.providers import Meeting


class BookingStore:
    """Reads upcoming sessions and records bookings."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory

    def upcoming_sessions(
        self,
        *,
        now: datetime,
        tutor_id: uuid.UUID | None = None,
        student_id: uuid.UUID | None = None,
        limit: int = 100,
    ) -> list[SessionView]:
        """Scheduled sessions that have not started, soonest first, with their join links."""
        tutor = User.__table__.alias("tutor")
        student = User.__table__.alias("student")
        query = (
            select(SessionRow, Booking.topic, tutor.c.name, student.c.name)
            .join(Booking, Booking.id == SessionRow.booking_id)
            .join(tutor, tutor.c.id == SessionRow.tutor_id)
            .join(student, student.c.id == SessionRow.student_id)
            .where(SessionRow.status.in_(ELIGIBLE), SessionRow.scheduled_start_at >= now)
            .order_by(SessionRow.scheduled_start_at)
            .limit(limit)
        )
        if tutor_id is not None:
            query = query.where(SessionRow.tutor_id == tutor_id)
        if student_id is not None:
            query = query.where(SessionRow.student_id == student_id)
        with self._sessions() as s:
            return [
                SessionView(
                    id=row.id,
                    booking_id=row.booking_id,
                    tutor_id=row.tutor_id,
                    student_id=row.student_id,
                    tutor_name=tutor_name,
                    student_name=student_name,
                    topic=topic,
                    status=row.status,
                    provider=row.provider,
                    join_url=row.join_url,
                    scheduled_start_at=row.scheduled_start_at,
                    duration_minutes=row.duration_minutes,
                )
                for row, topic, tutor_name, student_name in s.execute(query).all()
            ]

    def booking(self, booking_id: uuid.UUID) -> Booking | None:
        with self._sessions() as s:
            return s.get(Booking, booking_id)

    def record_booking(
        self,
        *,
        booking_id: uuid.UUID,
        session_id: uuid.UUID,
        tutor_id: uuid.UUID,
        student_id: uuid.UUID,
        topic: str,
        start: datetime,
        duration_minutes: int,
        timezone: str,
        meeting: Meeting,
        generation: int,
        now: datetime,
        external_id: str | None = None,
    ) -> bool:
        """Insert the booking and its session unless the connection changed since the meeting.

        The connection row is locked, so a switch either committed before
        (we see its generation and return False: the caller makes the meeting
        again at the new provider) or commits after (its migration finds this
        session on the old provider and moves it).
        """
        with self._sessions() as s, s.begin():
            row = lock_connection(s, tutor_id)
            if row is None or row.generation != generation or row.provider != meeting.provider:
                return False
            s.add(
                Booking(
                    id=booking_id,
                    tutor_id=tutor_id,
                    student_id=student_id,
                    topic=topic,
                    duration_minutes=duration_minutes,
                    timezone=timezone,
                )
            )
            s.flush()
            s.add(
                SessionRow(
                    id=session_id,
                    tutor_id=tutor_id,
                    student_id=student_id,
                    booking_id=booking_id,
                    provider=meeting.provider,
                    meeting_external_id=meeting.external_id,
                    join_url=meeting.join_url,
                    status=SessionStatus.SCHEDULED.value,
                    scheduled_start_at=start,
                    duration_minutes=duration_minutes,
                    meeting_created_at=now,
                    external_id=external_id,
                )
            )
            return True
