"""`sessions.cancelled_at`: when relink's service API cancelled the session

A session cancelled through `PUT /platform/v1/sessions/{id}/status` has its
meetings deleted by the migrator (`session.cancelled`). A session whose status
was set to CANCELLED in some other way (the platform's own SQL, before relink
knew it) is never touched (DESIGN.md: "Past, completed and cancelled sessions
are never touched"): the column tells the two apart. The partial index serves
the migrator's sweep for cancelled sessions' meetings still owed a deletion,
which otherwise reads every session.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_sessions_cancelled_with_meeting",
        "sessions",
        ["scheduled_start_at"],
        postgresql_where=sa.text("cancelled_at IS NOT NULL AND meeting_external_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_sessions_cancelled_with_meeting", table_name="sessions")
    op.drop_column("sessions", "cancelled_at")
