"""SQLAlchemy models of every table relink owns.

The schema itself is owned by the Alembic migrations in `migrations/`; these
models mirror it for queries. Constraints that hold the design's invariants
live in the database: one connection per tutor, one migration per
(switch, session), one audit row per event id, one notification per
(event, recipient).
"""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Provider(enum.StrEnum):
    """The video providers a tutor can connect."""

    GOOGLE_MEET = "google_meet"
    ZOOM = "zoom"


class UserRole(enum.StrEnum):
    TUTOR = "tutor"
    STUDENT = "student"


class SessionStatus(enum.StrEnum):
    """A tutoring session's lifecycle; only SCHEDULED and JOIN_OPEN are migrated."""

    SCHEDULED = "SCHEDULED"
    JOIN_OPEN = "JOIN_OPEN"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    NO_SHOW = "NO_SHOW"


class SwitchState(enum.StrEnum):
    """Where a provider switch is in its life."""

    PENDING = "PENDING"  # written by the gateway, not yet picked up
    PLANNING = "PLANNING"  # the migrator is recording the plan
    MIGRATING = "MIGRATING"  # meetings are being created
    COMPLETED = "COMPLETED"  # every planned session migrated
    COMPLETED_WITH_FAILURES = "COMPLETED_WITH_FAILURES"
    SUPERSEDED = "SUPERSEDED"  # a newer switch of the same tutor replaced it
    ROLLING_BACK = "ROLLING_BACK"
    ROLLED_BACK = "ROLLED_BACK"


class MigrationState(enum.StrEnum):
    """One session's migration within a switch."""

    PENDING = "PENDING"
    MEETING_CREATED = "MEETING_CREATED"  # exists at the provider, session not yet updated
    MIGRATED = "MIGRATED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # cancelled/started meanwhile, or superseded
    ROLLED_BACK = "ROLLED_BACK"


class NotificationState(enum.StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    FAILED_PERMANENT = "FAILED_PERMANENT"


class WebhookDeliveryState(enum.StrEnum):
    """One event owed to one webhook endpoint (0011)."""

    PENDING = "PENDING"  # to be sent at next_attempt_at
    DELIVERED = "DELIVERED"  # the endpoint answered 2xx
    FAILED = "FAILED"  # every attempt of the retry schedule failed
    SKIPPED = "SKIPPED"  # the endpoint was disabled; `relink webhooks replay` sends it again


def _enum_check(column: str, values: type[enum.StrEnum]) -> CheckConstraint:
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_valid")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    """A tutor or a student, as the platform around us knows them."""

    __tablename__ = "users"
    __table_args__ = (_enum_check("role", UserRole),)

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    role: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    email: Mapped[str] = mapped_column(Text, unique=True)
    timezone: Mapped[str] = mapped_column(Text, server_default="UTC")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # the platform's own id for the user (the service API's key), 0008
    external_id: Mapped[str | None] = mapped_column(Text, unique=True, nullable=True)


class Connection(Base):
    """A tutor's one active video-provider connection, tokens encrypted."""

    __tablename__ = "tutor_video_provider_connections"
    __table_args__ = (_enum_check("provider", Provider),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    tutor_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    provider: Mapped[str] = mapped_column(Text)
    # 0006: NULL once the tutor removed relink's app at the provider (tokens forgotten).
    access_token_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    refresh_token_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    token_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    scopes: Mapped[str] = mapped_column(Text, server_default="")
    provider_account_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    provider_account_email: Mapped[str | None] = mapped_column(Text, nullable=True)
    connected_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    generation: Mapped[int] = mapped_column(Integer, server_default="1")
    # The connection a rollback restores: kept (encrypted) until the grace period ends.
    previous_provider: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_access_token_encrypted: Mapped[bytes | None] = mapped_column(
        LargeBinary, nullable=True
    )
    previous_refresh_token_encrypted: Mapped[bytes | None] = mapped_column(
        LargeBinary, nullable=True
    )
    previous_token_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    # 0006: when and why the provider told us the tutor removed relink's app.
    disconnected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    disconnect_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # 0006: the provider account the previous_* tokens belong to.
    previous_provider_account_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    # 0007: that account's email (a rollback shows it again).
    previous_provider_account_email: Mapped[str | None] = mapped_column(Text, nullable=True)


class Booking(Base):
    """What a student booked: what meeting creation needs."""

    __tablename__ = "bookings"
    __table_args__ = (CheckConstraint("duration_minutes > 0", name="duration_positive"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    tutor_id: Mapped[uuid.UUID] = mapped_column(UUID, ForeignKey("users.id", ondelete="CASCADE"))
    student_id: Mapped[uuid.UUID] = mapped_column(UUID, ForeignKey("users.id", ondelete="CASCADE"))
    topic: Mapped[str] = mapped_column(Text)
    duration_minutes: Mapped[int] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(Text, server_default="UTC")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Session(Base):
    """One scheduled tutoring session and the meeting it currently uses."""

    __tablename__ = "sessions"
    __table_args__ = (
        _enum_check("status", SessionStatus),
        CheckConstraint(
            "provider IS NULL OR provider IN ('google_meet', 'zoom')", name="provider_valid"
        ),
        CheckConstraint("duration_minutes > 0", name="duration_positive"),
        # The migrator's query: a tutor's eligible sessions, soonest first.
        Index(
            "ix_sessions_tutor_status_start",
            "tutor_id",
            "status",
            "scheduled_start_at",
        ),
        Index("ix_sessions_student_start", "student_id", "scheduled_start_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    tutor_id: Mapped[uuid.UUID] = mapped_column(UUID, ForeignKey("users.id", ondelete="CASCADE"))
    student_id: Mapped[uuid.UUID] = mapped_column(UUID, ForeignKey("users.id", ondelete="CASCADE"))
    booking_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("bookings.id", ondelete="CASCADE")
    )
    provider: Mapped[str | None] = mapped_column(Text, nullable=True)
    meeting_external_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    join_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(Text, server_default=SessionStatus.SCHEDULED.value)
    scheduled_start_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_minutes: Mapped[int] = mapped_column(Integer)
    meeting_created_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    # the platform's own id for the session (the service API's key), 0008
    external_id: Mapped[str | None] = mapped_column(Text, unique=True, nullable=True)
    # when the service API cancelled it (its meetings are then deleted), 0015;
    # a session cancelled any other way is never touched
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Outbox(Base):
    """Events waiting for the relay; written in the same transaction as their cause."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
        ),
        Index("ix_outbox_published_at", "published_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID, unique=True)
    aggregate_type: Mapped[str] = mapped_column(Text)
    aggregate_id: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(Text)
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    publish_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class SwitchRequest(Base):
    """A switch as the tutor asked for it: the gateway's record, its only writer (0013).

    Written in the OAuth callback's transaction with the connection and the
    `provider.switched` outbox row; `rollback_requested_at` in the rollback's,
    with the connection swapped back. The switch's progress is the migrator's
    `ProviderSwitch`, created when it handles the request.
    """

    __tablename__ = "switch_requests"
    __table_args__ = (
        CheckConstraint("from_provider IN ('google_meet', 'zoom')", name="from_provider_valid"),
        CheckConstraint("to_provider IN ('google_meet', 'zoom')", name="to_provider_valid"),
        CheckConstraint("from_provider <> to_provider", name="providers_differ"),
        Index("ix_switch_requests_tutor_requested", "tutor_id", "requested_at"),
        # 0014: the migrator's catch-up and rollback resume
        Index("ix_switch_requests_requested", "requested_at"),
        Index(
            "ix_switch_requests_rollback_requested",
            "requested_at",
            postgresql_where=text("rollback_requested_at IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    tutor_id: Mapped[uuid.UUID] = mapped_column(UUID, ForeignKey("users.id", ondelete="CASCADE"))
    from_provider: Mapped[str] = mapped_column(Text)
    to_provider: Mapped[str] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    rollback_deadline: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    rollback_requested_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )


class ProviderSwitch(Base):
    """One switch's progress: the migrator's record, its only writer (0013).

    Created by the migrator when it handles the tutor's `SwitchRequest` (same
    id), then moved through the states of `core.switching.SWITCH_TRANSITIONS`.
    """

    __tablename__ = "provider_switches"
    __table_args__ = (
        _enum_check("state", SwitchState),
        CheckConstraint("from_provider IN ('google_meet', 'zoom')", name="from_provider_valid"),
        CheckConstraint("to_provider IN ('google_meet', 'zoom')", name="to_provider_valid"),
        CheckConstraint("from_provider <> to_provider", name="providers_differ"),
        CheckConstraint(
            "sessions_total >= 0 AND sessions_migrated >= 0 AND sessions_failed >= 0",
            name="totals_non_negative",
        ),
        Index("ix_provider_switches_tutor_created", "tutor_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("switch_requests.id", ondelete="CASCADE"), primary_key=True
    )
    tutor_id: Mapped[uuid.UUID] = mapped_column(UUID, ForeignKey("users.id", ondelete="CASCADE"))
    from_provider: Mapped[str] = mapped_column(Text)
    to_provider: Mapped[str] = mapped_column(Text)
    # The connection generation this switch produced; a newer one supersedes it.
    generation: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(Text, server_default=SwitchState.PENDING.value)
    sessions_total: Mapped[int] = mapped_column(Integer, server_default="0")
    sessions_migrated: Mapped[int] = mapped_column(Integer, server_default="0")
    sessions_failed: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rollback_deadline: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    rolled_back_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    old_meetings_cleaned_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    # 0005: when the remaining sessions will move (a provider's daily cap), and why.
    waiting_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    waiting_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class SessionMigration(Base):
    """One session's move within one switch: what makes the migrator idempotent."""

    __tablename__ = "session_migrations"
    __table_args__ = (
        UniqueConstraint("switch_id", "session_id"),
        _enum_check("state", MigrationState),
        Index("ix_session_migrations_state_next", "state", "next_attempt_at"),
        Index("ix_session_migrations_session", "session_id"),
        # 0003: the executor's claim (a tutor's unsettled rows, soonest first).
        CheckConstraint("kind IN ('switch', 'retry', 'rollback')", name="kind_valid"),
        Index(
            "ix_session_migrations_tutor_due",
            "tutor_id",
            "scheduled_start_at",
            # the unsettled rows (core.switching.UNSETTLED; a test keeps the two in step)
            postgresql_where=text("state IN ('PENDING', 'MEETING_CREATED')"),
        ),
        Index("ix_session_migrations_switch_state", "switch_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    switch_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("provider_switches.id", ondelete="CASCADE")
    )
    session_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("sessions.id", ondelete="CASCADE")
    )
    tutor_id: Mapped[uuid.UUID] = mapped_column(UUID)
    # Soonest first: copied from the session so the executor orders without a join.
    scheduled_start_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(Text, server_default=MigrationState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    from_provider: Mapped[str | None] = mapped_column(Text, nullable=True)
    to_provider: Mapped[str] = mapped_column(Text)
    previous_meeting_external_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_join_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    new_meeting_external_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    new_join_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    retryable: Mapped[bool | None] = mapped_column(nullable=True)
    # 0003: `switch`, `retry` or `rollback`; the event the row ends with says so.
    kind: Mapped[str] = mapped_column(Text, server_default="switch")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # 0004: the rollback deleted the new meeting / the cleanup deleted the previous one.
    new_meeting_deleted_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    previous_meeting_deleted_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    # 0005: retryable failures the migrator put back in the queue by itself.
    auto_retries: Mapped[int] = mapped_column(Integer, server_default="0")


class ProviderQuotaUsage(Base):
    """Meeting creates relink spent per tutor, provider and quota day (reserved before each)."""

    __tablename__ = "provider_quota_usage"
    __table_args__ = (
        CheckConstraint("used >= 0", name="used_non_negative"),
        CheckConstraint("provider IN ('google_meet', 'zoom')", name="provider_valid"),
    )

    tutor_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    quota_day: Mapped[date] = mapped_column(Date, primary_key=True)
    used: Mapped[int] = mapped_column(Integer, server_default="0")


class ProviderHold(Base):
    """No API call for `account` at `provider` before `held_until` (a 429's Retry-After; 0010)."""

    __tablename__ = "provider_holds"

    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    account: Mapped[str] = mapped_column(Text, primary_key=True)
    held_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    """One row per event, keyed by event id; rebuildable from the topics."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tutor_time", "tutor_id", "event_time"),)

    event_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    event_source: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(Text)
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    tutor_id: Mapped[uuid.UUID | None] = mapped_column(UUID, nullable=True)
    switch_id: Mapped[uuid.UUID | None] = mapped_column(UUID, nullable=True)
    session_id: Mapped[uuid.UUID | None] = mapped_column(UUID, nullable=True)
    from_provider: Mapped[str | None] = mapped_column(Text, nullable=True)
    to_provider: Mapped[str | None] = mapped_column(Text, nullable=True)
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    kafka_topic: Mapped[str | None] = mapped_column(Text, nullable=True)
    kafka_partition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kafka_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Notification(Base):
    """One email per (event, recipient): a redelivered event sends nothing."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("event_id", "recipient"),
        _enum_check("state", NotificationState),
        Index(
            "ix_notifications_due", "next_attempt_at", postgresql_where=text("state = 'PENDING'")
        ),
        Index("ix_notifications_switch_kind", "switch_id", "kind"),
        Index(
            "ix_notifications_session_calendar",
            "session_id",
            postgresql_where=text("calendar IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID)
    recipient: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    switch_id: Mapped[uuid.UUID | None] = mapped_column(UUID, nullable=True)
    state: Mapped[str] = mapped_column(Text, server_default=NotificationState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # 0002: the email itself, rendered when owed, and when to try (again).
    session_id: Mapped[uuid.UUID | None] = mapped_column(UUID, nullable=True)
    recipient_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    message_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
    body_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    body_html: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # 0012: the student's calendar update (iCalendar text, iTIP method inside), or NULL.
    calendar: Mapped[str | None] = mapped_column(Text, nullable=True)


class Tracking(Base):
    """A consumer's record of an event it handled, written with the handler's effect (0009)."""

    __tablename__ = "tracking"
    __table_args__ = (Index("ix_tracking_tracked_at", "tracked_at"),)

    consumer: Mapped[str] = mapped_column(Text, primary_key=True)
    event_source: Mapped[str] = mapped_column(Text, primary_key=True)
    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    event_type: Mapped[str] = mapped_column(Text)
    kafka_topic: Mapped[str | None] = mapped_column(Text, nullable=True)
    kafka_partition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kafka_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tracked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ProviderNotification(Base):
    """A provider notification the gateway acted on, keyed by its signed body's hash (0006)."""

    __tablename__ = "provider_notifications"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    provider: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str] = mapped_column(Text)


class MeetingDeletion(Base):
    """A session's meeting deleted at the provider, open until a new meeting replaces it (0006)."""

    __tablename__ = "meeting_deletions"
    __table_args__ = (
        UniqueConstraint("session_id", "meeting_external_id"),
        CheckConstraint("provider IN ('google_meet', 'zoom')", name="provider_valid"),
        Index(
            "ix_meeting_deletions_tutor_open",
            "tutor_id",
            postgresql_where=text("resolved_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("sessions.id", ondelete="CASCADE")
    )
    tutor_id: Mapped[uuid.UUID] = mapped_column(UUID)
    provider: Mapped[str] = mapped_column(Text)
    meeting_external_id: Mapped[str] = mapped_column(Text)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    new_meeting_external_id: Mapped[str | None] = mapped_column(Text, nullable=True)


class ProviderChannel(Base):
    """A Google Calendar push-notification channel of a connection (0006)."""

    __tablename__ = "provider_channels"
    __table_args__ = (Index("ix_provider_channels_tutor", "tutor_id"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    tutor_id: Mapped[uuid.UUID] = mapped_column(UUID, ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(Text)
    token_sha256: Mapped[str] = mapped_column(Text)
    resource_id: Mapped[str] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_message_number: Mapped[int] = mapped_column(BigInteger, server_default="0")


class ApiKey(Base):
    """A credential of the platform's backend for the service API (0008).

    The id is public (`rk_…`); of the secret only its SHA-256 is kept.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary)
    scopes: Mapped[str] = mapped_column(Text)  # space-separated, e.g. "users:write sessions:write"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class IdempotentRequest(Base):
    """A service-API write under an `Idempotency-Key`: its hash, then its answer (0008)."""

    __tablename__ = "idempotent_requests"

    api_key_id: Mapped[str] = mapped_column(
        Text, ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    request_sha256: Mapped[bytes] = mapped_column(LargeBinary)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: in progress
    response: Mapped[Any] = mapped_column(JSONB, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OAuthState(Base):
    """A single-use OAuth `state`, bound to a tutor and provider, with its PKCE verifier."""

    __tablename__ = "oauth_states"
    __table_args__ = (_enum_check("provider", Provider),)

    state: Mapped[str] = mapped_column(Text, primary_key=True)
    tutor_id: Mapped[uuid.UUID] = mapped_column(UUID, ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(Text)
    code_verifier_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookEndpoint(Base):
    """A URL of the platform's that receives signed webhooks (0011).

    The secret (`whsec_…`) is stored encrypted like OAuth tokens, bound to the
    endpoint's id. `event_types` is space-separated; empty means every type.
    """

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    event_types: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    failure_streak: Mapped[int] = mapped_column(Integer, server_default="0")
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookDelivery(Base):
    """One event owed to one endpoint, recorded with the dispatcher's tracking row (0011)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_source", "event_id"),
        _enum_check("state", WebhookDeliveryState),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("state = 'PENDING'"),
        ),
        Index("ix_webhook_deliveries_endpoint_time", "endpoint_id", "event_time"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(
        Text, ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    message_id: Mapped[str] = mapped_column(Text)  # the `webhook-id` header
    event_source: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(Text)
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    body: Mapped[str] = mapped_column(Text)  # the exact JSON that is signed and sent
    state: Mapped[str] = mapped_column(Text, server_default=WebhookDeliveryState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery: the endpoint's delivery log (0011)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_endpoint_at", "endpoint_id", "attempted_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[str] = mapped_column(Text)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)
