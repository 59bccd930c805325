"""Provider quota budgets, a switch's announced wait, and automatic retries

- `provider_quota_usage`: meeting creates relink spent per tutor, provider
  and quota day, reserved before each create so the migrator never sends a
  request over a provider's daily cap (Zoom: 100 creates per user per day).
- `provider_switches.waiting_until` / `waiting_reason`: when a switch's
  remaining sessions will move, shown on the video-setup page and emailed.
- `session_migrations.auto_retries`: how many times the migrator itself put a
  retryable failure back in the queue (bounded by a setting).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_quota_usage",
        sa.Column(
            "tutor_id", UUID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("provider", sa.Text, primary_key=True),
        sa.Column("quota_day", sa.Date, primary_key=True),
        sa.Column("used", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint("used >= 0", name=op.f("ck_provider_quota_usage_used_non_negative")),
        sa.CheckConstraint(
            "provider IN ('google_meet', 'zoom')",
            name=op.f("ck_provider_quota_usage_provider_valid"),
        ),
    )
    op.add_column(
        "provider_switches",
        sa.Column("waiting_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column("provider_switches", sa.Column("waiting_reason", sa.Text, nullable=True))
    op.add_column(
        "session_migrations",
        sa.Column("auto_retries", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("session_migrations", "auto_retries")
    op.drop_column("provider_switches", "waiting_reason")
    op.drop_column("provider_switches", "waiting_until")
    op.drop_table("provider_quota_usage")
