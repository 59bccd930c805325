"""session_migrations: why a row moves (kind) and the executor's claim index

The migrator's executor claims each tutor's due rows soonest first; a partial
index on (tutor_id, scheduled_start_at) over the unsettled rows keeps that a
short index walk even for a tutor with 100,000 sessions. `kind` records
whether a row is a switch's first move, a retry or a rollback, so the event
it ends with says so.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "session_migrations",
        sa.Column("kind", sa.Text(), server_default="switch", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_session_migrations_kind_valid"),
        "session_migrations",
        "kind IN ('switch', 'retry', 'rollback')",
    )
    op.create_index(
        "ix_session_migrations_tutor_due",
        "session_migrations",
        ["tutor_id", "scheduled_start_at"],
        postgresql_where=sa.text("state IN ('PENDING', 'MEETING_CREATED')"),
    )
    op.create_index(
        "ix_session_migrations_switch_state", "session_migrations", ["switch_id", "state"]
    )


def downgrade() -> None:
    op.drop_index("ix_session_migrations_switch_state", table_name="session_migrations")
    op.drop_index("ix_session_migrations_tutor_due", table_name="session_migrations")
    op.drop_constraint(
        op.f("ck_session_migrations_kind_valid"), "session_migrations", type_="check"
    )
    op.drop_column("session_migrations", "kind")
