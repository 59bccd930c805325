"""notifications carry their rendered email and retry schedule

The notifier records an email it owes (content included) in the same
transaction as the audit row, commits the Kafka offset, and sends later with
backoff: an SMTP outage then never holds the consumer back, and a PENDING
row is an email that will go out even after a crash.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("notifications", sa.Column("session_id", sa.UUID(), nullable=True))
    op.add_column("notifications", sa.Column("recipient_name", sa.Text(), nullable=True))
    op.add_column("notifications", sa.Column("message_id", sa.Text(), nullable=True))
    op.add_column("notifications", sa.Column("subject", sa.Text(), nullable=True))
    op.add_column("notifications", sa.Column("body_text", sa.Text(), nullable=True))
    op.add_column("notifications", sa.Column("body_html", sa.Text(), nullable=True))
    op.add_column(
        "notifications",
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )
    op.create_index(
        "ix_notifications_due",
        "notifications",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'PENDING'"),
    )
    op.create_index("ix_notifications_switch_kind", "notifications", ["switch_id", "kind"])


def downgrade() -> None:
    op.drop_index("ix_notifications_switch_kind", table_name="notifications")
    op.drop_index("ix_notifications_due", table_name="notifications")
    for column in (
        "next_attempt_at",
        "body_html",
        "body_text",
        "subject",
        "message_id",
        "recipient_name",
        "session_id",
    ):
        op.drop_column("notifications", column)
