"""notifications carry the students' calendar update

- `notifications.calendar`: the iCalendar object (RFC 5545, iTIP method inside,
  RFC 5546) rendered with the email when it is owed, so a resend carries the
  same UID and SEQUENCE byte for byte. NULL for emails without one (the tutor's).
- `ix_notifications_session_calendar`: a session's calendar updates, counted to
  give the next one its SEQUENCE (issue 19).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("notifications", sa.Column("calendar", sa.Text(), nullable=True))
    op.create_index(
        "ix_notifications_session_calendar",
        "notifications",
        ["session_id"],
        postgresql_where=sa.text("calendar IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_session_calendar", table_name="notifications")
    op.drop_column("notifications", "calendar")
