"""What the providers tell relink: deauthorizations and meetings deleted at the provider

- `tutor_video_provider_connections.disconnected_at` / `disconnect_reason`: the
  tutor removed relink's app at the provider (Zoom `app_deauthorized`); the
  connection's tokens are erased, so `access_token_encrypted` may be NULL.
  `previous_provider_account_id`: whose account the kept previous tokens are
  (a removal of the app at that provider erases them too).
- `provider_notifications`: every provider notification the gateway acted on,
  keyed by a hash of its signed body, written in the same transaction as its
  effect, so a replayed (or redelivered) notification changes nothing.
- `meeting_deletions`: a session's meeting that was deleted at the provider
  (Zoom `meeting.deleted`, a cancelled Google Calendar event), shown to the
  tutor until a new meeting replaces it.
- `provider_channels`: Google Calendar push-notification channels
  (events.watch) opened for a connection: the channel token's hash, Google's
  resource id, expiry, and the last message number (older ones are replays).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("tutor_video_provider_connections", "access_token_encrypted", nullable=True)
    op.add_column(
        "tutor_video_provider_connections",
        sa.Column("disconnected_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "tutor_video_provider_connections",
        sa.Column("disconnect_reason", sa.Text, nullable=True),
    )
    op.add_column(
        "tutor_video_provider_connections",
        sa.Column("previous_provider_account_id", sa.Text, nullable=True),
    )
    op.create_table(
        "provider_notifications",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
    )
    op.create_table(
        "meeting_deletions",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column(
            "session_id", UUID, sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("tutor_id", UUID, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("meeting_external_id", sa.Text, nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        # Set when a new meeting replaced the deleted one.
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("new_meeting_external_id", sa.Text, nullable=True),
        sa.UniqueConstraint("session_id", "meeting_external_id"),
        sa.CheckConstraint(
            "provider IN ('google_meet', 'zoom')", name=op.f("ck_meeting_deletions_provider_valid")
        ),
    )
    op.create_table(
        "provider_channels",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("tutor_id", UUID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("token_sha256", sa.Text, nullable=False),
        sa.Column("resource_id", sa.Text, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_message_number", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_provider_channels_tutor", "provider_channels", ["tutor_id"])
    op.create_index(
        "ix_meeting_deletions_tutor_open",
        "meeting_deletions",
        ["tutor_id"],
        postgresql_where=sa.text("resolved_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_meeting_deletions_tutor_open", table_name="meeting_deletions")
    op.drop_table("meeting_deletions")
    op.drop_index("ix_provider_channels_tutor", table_name="provider_channels")
    op.drop_table("provider_channels")
    op.drop_table("provider_notifications")
    op.drop_column("tutor_video_provider_connections", "previous_provider_account_id")
    op.drop_column("tutor_video_provider_connections", "disconnect_reason")
    op.drop_column("tutor_video_provider_connections", "disconnected_at")
    # Rows without tokens cannot go back under NOT NULL: they have no connection left.
    op.execute("DELETE FROM tutor_video_provider_connections WHERE access_token_encrypted IS NULL")
    op.alter_column("tutor_video_provider_connections", "access_token_encrypted", nullable=False)
