"""Tracking records: which consumer has handled which event

- `tracking`: one row per (consumer, event source, event id) a consumer has
  handled, written in the transaction of the handler's effect (the notifier's
  audit rows and owed emails, the migrator's plan, retry or rollback), so a
  redelivered event is recognised by its row and changes nothing. The Kafka
  coordinates it was read at are kept for diagnosis. Modelled on
  pyeventsourcing's `Tracking` / `ProcessRecorder` (issue 17).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tracking",
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_source", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("kafka_topic", sa.Text, nullable=True),
        sa.Column("kafka_partition", sa.Integer, nullable=True),
        sa.Column("kafka_offset", sa.BigInteger, nullable=True),
        sa.Column(
            "tracked_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index("ix_tracking_tracked_at", "tracking", ["tracked_at"])


def downgrade() -> None:
    op.drop_index("ix_tracking_tracked_at", table_name="tracking")
    op.drop_table("tracking")
