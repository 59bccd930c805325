"""session_migrations: when each row's meetings were deleted (rollback and cleanup)

A rollback deletes the meeting a row created at the new provider; the cleanup
after the grace period deletes the row's previous meeting at the old
provider. Recording when each was done makes both resumable after a crash
without asking the provider twice.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "session_migrations",
        sa.Column("new_meeting_deleted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "session_migrations",
        sa.Column("previous_meeting_deleted_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("session_migrations", "previous_meeting_deleted_at")
    op.drop_column("session_migrations", "new_meeting_deleted_at")
