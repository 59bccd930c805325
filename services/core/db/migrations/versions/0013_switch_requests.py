"""Switch requests: the gateway's record of a switch, apart from the migrator's progress

One writer per table (issue 17). The gateway used to insert the switch
(`provider_switches`, PENDING) and set it ROLLING_BACK, while the migrator
moved it through every other state: two services advanced one row.

- `switch_requests` (the gateway's): what the tutor asked for, written in
  the OAuth callback's transaction with the connection and the outbox row:
  the switch id, its providers and generation, when, its rollback deadline,
  and when (if ever) the tutor asked to roll it back.
- `provider_switches` (the migrator's): the switch's progress. The migrator
  creates its row when it handles the request (`provider.switched`, or the
  catch-up for one whose event never came) and is its only writer, the
  ROLLING_BACK state included.

Existing switches get their request row from what `provider_switches` holds;
each progress row then refers to its request.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "switch_requests",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "tutor_id",
            UUID(as_uuid=True),
            sa.ForeignKey(
                "users.id", ondelete="CASCADE", name=op.f("fk_switch_requests_tutor_id_users")
            ),
            nullable=False,
        ),
        sa.Column("from_provider", sa.Text, nullable=False),
        sa.Column("to_provider", sa.Text, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column(
            "requested_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("rollback_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rollback_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "from_provider IN ('google_meet', 'zoom')",
            name=op.f("ck_switch_requests_from_provider_valid"),
        ),
        sa.CheckConstraint(
            "to_provider IN ('google_meet', 'zoom')",
            name=op.f("ck_switch_requests_to_provider_valid"),
        ),
        sa.CheckConstraint(
            "from_provider <> to_provider", name=op.f("ck_switch_requests_providers_differ")
        ),
    )
    op.create_index(
        "ix_switch_requests_tutor_requested", "switch_requests", ["tutor_id", "requested_at"]
    )
    op.execute(
        """
        INSERT INTO switch_requests (id, tutor_id, from_provider, to_provider, generation,
                                     requested_at, rollback_deadline, rollback_requested_at)
        SELECT id, tutor_id, from_provider, to_provider, generation, created_at,
               rollback_deadline,
               CASE WHEN state IN ('ROLLING_BACK', 'ROLLED_BACK')
                    THEN coalesce(rolled_back_at, completed_at, created_at) END
        FROM provider_switches
        """
    )
    op.create_foreign_key(
        "fk_provider_switches_id_switch_requests",
        "provider_switches",
        "switch_requests",
        ["id"],
        ["id"],
        ondelete="CASCADE",
    )


def downgrade() -> None:
    op.drop_constraint(
        "fk_provider_switches_id_switch_requests", "provider_switches", type_="foreignkey"
    )
    op.drop_index("ix_switch_requests_tutor_requested", table_name="switch_requests")
    op.drop_table("switch_requests")
