"""Indexes for the migrator's periodic reads of `switch_requests`

The catch-up (every `RELINK_MIGRATOR_UNHANDLED_AFTER_S` / 3) looks for recent
requests the migrator has not handled, and the rollback resume (every
cleanup interval) for requests with a rollback asked for. Without these
indexes both read the whole table, which only grows.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_switch_requests_requested", "switch_requests", ["requested_at"])
    op.create_index(
        "ix_switch_requests_rollback_requested",
        "switch_requests",
        ["requested_at"],
        postgresql_where=sa.text("rollback_requested_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_switch_requests_rollback_requested", table_name="switch_requests")
    op.drop_index("ix_switch_requests_requested", table_name="switch_requests")
