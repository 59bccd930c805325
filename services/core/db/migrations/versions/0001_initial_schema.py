"""initial schema: every table of DESIGN.md, with the invariants as constraints

Revision ID: 0001
Revises:
Create Date: 2026-11-25 10:54:41.721509
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_source", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tutor_id", sa.UUID(), nullable=True),
        sa.Column("switch_id", sa.UUID(), nullable=True),
        sa.Column("session_id", sa.UUID(), nullable=True),
        sa.Column("from_provider", sa.Text(), nullable=True),
        sa.Column("to_provider", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("kafka_topic", sa.Text(), nullable=True),
        sa.Column("kafka_partition", sa.Integer(), nullable=True),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=True),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_audit_log")),
    )
    op.create_index(
        "ix_audit_log_tutor_time", "audit_log", ["tutor_id", "event_time"], unique=False
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("switch_id", sa.UUID(), nullable=True),
        sa.Column("state", sa.Text(), server_default="PENDING", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('PENDING', 'SENT', 'FAILED_PERMANENT')",
            name=op.f("ck_notifications_state_valid"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint(
            "event_id", "recipient", name=op.f("uq_notifications_event_id_recipient")
        ),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("aggregate_type", sa.Text(), nullable=False),
        sa.Column("aggregate_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "headers",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("publish_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )
    op.create_index("ix_outbox_published_at", "outbox", ["published_at"], unique=False)
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("timezone", sa.Text(), server_default="UTC", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("role IN ('tutor', 'student')", name=op.f("ck_users_role_valid")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "bookings",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tutor_id", sa.UUID(), nullable=False),
        sa.Column("student_id", sa.UUID(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.Text(), server_default="UTC", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("duration_minutes > 0", name=op.f("ck_bookings_duration_positive")),
        sa.ForeignKeyConstraint(
            ["student_id"],
            ["users.id"],
            name=op.f("fk_bookings_student_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tutor_id"], ["users.id"], name=op.f("fk_bookings_tutor_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bookings")),
    )
    op.create_table(
        "oauth_states",
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("tutor_id", sa.UUID(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("code_verifier_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "provider IN ('google_meet', 'zoom')", name=op.f("ck_oauth_states_provider_valid")
        ),
        sa.ForeignKeyConstraint(
            ["tutor_id"],
            ["users.id"],
            name=op.f("fk_oauth_states_tutor_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("state", name=op.f("pk_oauth_states")),
    )
    op.create_table(
        "provider_switches",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tutor_id", sa.UUID(), nullable=False),
        sa.Column("from_provider", sa.Text(), nullable=False),
        sa.Column("to_provider", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), server_default="PENDING", nullable=False),
        sa.Column("sessions_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sessions_migrated", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sessions_failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rollback_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rolled_back_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("old_meetings_cleaned_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "from_provider IN ('google_meet', 'zoom')",
            name=op.f("ck_provider_switches_from_provider_valid"),
        ),
        sa.CheckConstraint(
            "state IN ('PENDING', 'PLANNING', 'MIGRATING', 'COMPLETED', 'COMPLETED_WITH_FAILURES', 'SUPERSEDED', 'ROLLING_BACK', 'ROLLED_BACK')",
            name=op.f("ck_provider_switches_state_valid"),
        ),
        sa.CheckConstraint(
            "to_provider IN ('google_meet', 'zoom')",
            name=op.f("ck_provider_switches_to_provider_valid"),
        ),
        sa.CheckConstraint(
            "from_provider <> to_provider", name=op.f("ck_provider_switches_providers_differ")
        ),
        sa.CheckConstraint(
            "sessions_total >= 0 AND sessions_migrated >= 0 AND sessions_failed >= 0",
            name=op.f("ck_provider_switches_totals_non_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["tutor_id"],
            ["users.id"],
            name=op.f("fk_provider_switches_tutor_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_switches")),
    )
    op.create_index(
        "ix_provider_switches_tutor_created",
        "provider_switches",
        ["tutor_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "tutor_video_provider_connections",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("tutor_id", sa.UUID(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("access_token_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("refresh_token_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scopes", sa.Text(), server_default="", nullable=False),
        sa.Column("provider_account_id", sa.Text(), nullable=True),
        sa.Column("provider_account_email", sa.Text(), nullable=True),
        sa.Column(
            "connected_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("generation", sa.Integer(), server_default="1", nullable=False),
        sa.Column("previous_provider", sa.Text(), nullable=True),
        sa.Column("previous_access_token_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("previous_refresh_token_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("previous_token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "provider IN ('google_meet', 'zoom')",
            name=op.f("ck_tutor_video_provider_connections_provider_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["tutor_id"],
            ["users.id"],
            name=op.f("fk_tutor_video_provider_connections_tutor_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tutor_video_provider_connections")),
        sa.UniqueConstraint("tutor_id", name=op.f("uq_tutor_video_provider_connections_tutor_id")),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tutor_id", sa.UUID(), nullable=False),
        sa.Column("student_id", sa.UUID(), nullable=False),
        sa.Column("booking_id", sa.UUID(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("meeting_external_id", sa.Text(), nullable=True),
        sa.Column("join_url", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default="SCHEDULED", nullable=False),
        sa.Column("scheduled_start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("meeting_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "provider IS NULL OR provider IN ('google_meet', 'zoom')",
            name=op.f("ck_sessions_provider_valid"),
        ),
        sa.CheckConstraint(
            "status IN ('SCHEDULED', 'JOIN_OPEN', 'IN_PROGRESS', 'COMPLETED', 'CANCELLED', 'NO_SHOW')",
            name=op.f("ck_sessions_status_valid"),
        ),
        sa.CheckConstraint("duration_minutes > 0", name=op.f("ck_sessions_duration_positive")),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["bookings.id"],
            name=op.f("fk_sessions_booking_id_bookings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["student_id"],
            ["users.id"],
            name=op.f("fk_sessions_student_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tutor_id"], ["users.id"], name=op.f("fk_sessions_tutor_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_index(
        "ix_sessions_student_start", "sessions", ["student_id", "scheduled_start_at"], unique=False
    )
    op.create_index(
        "ix_sessions_tutor_status_start",
        "sessions",
        ["tutor_id", "status", "scheduled_start_at"],
        unique=False,
    )
    op.create_table(
        "session_migrations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("switch_id", sa.UUID(), nullable=False),
        sa.Column("session_id", sa.UUID(), nullable=False),
        sa.Column("tutor_id", sa.UUID(), nullable=False),
        sa.Column("scheduled_start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Text(), server_default="PENDING", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("from_provider", sa.Text(), nullable=True),
        sa.Column("to_provider", sa.Text(), nullable=False),
        sa.Column("previous_meeting_external_id", sa.Text(), nullable=True),
        sa.Column("previous_join_url", sa.Text(), nullable=True),
        sa.Column("new_meeting_external_id", sa.Text(), nullable=True),
        sa.Column("new_join_url", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("retryable", sa.Boolean(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "state IN ('PENDING', 'MEETING_CREATED', 'MIGRATED', 'FAILED', 'SKIPPED', 'ROLLED_BACK')",
            name=op.f("ck_session_migrations_state_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_session_migrations_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["switch_id"],
            ["provider_switches.id"],
            name=op.f("fk_session_migrations_switch_id_provider_switches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_migrations")),
        sa.UniqueConstraint(
            "switch_id", "session_id", name=op.f("uq_session_migrations_switch_id_session_id")
        ),
    )
    op.create_index(
        "ix_session_migrations_session", "session_migrations", ["session_id"], unique=False
    )
    op.create_index(
        "ix_session_migrations_state_next",
        "session_migrations",
        ["state", "next_attempt_at"],
        unique=False,
    )

    # The relay LISTENs on this channel; one notification per inserting
    # statement (not per row) keeps bulk inserts cheap.
    op.execute(
        """
        CREATE FUNCTION relink_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('relink_outbox', '');
            RETURN NULL;
        END;
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
        FOR EACH STATEMENT EXECUTE FUNCTION relink_outbox_notify()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS relink_outbox_notify()")
    op.drop_index("ix_session_migrations_state_next", table_name="session_migrations")
    op.drop_index("ix_session_migrations_session", table_name="session_migrations")
    op.drop_table("session_migrations")
    op.drop_index("ix_sessions_tutor_status_start", table_name="sessions")
    op.drop_index("ix_sessions_student_start", table_name="sessions")
    op.drop_table("sessions")
    op.drop_table("tutor_video_provider_connections")
    op.drop_index("ix_provider_switches_tutor_created", table_name="provider_switches")
    op.drop_table("provider_switches")
    op.drop_table("oauth_states")
    op.drop_table("bookings")
    op.drop_table("users")
    op.drop_index(
        "ix_outbox_unpublished",
        table_name="outbox",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_index("ix_outbox_published_at", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("notifications")
    op.drop_index("ix_audit_log_tutor_time", table_name="audit_log")
    op.drop_table("audit_log")
