"""Provider holds: a 429's Retry-After, shared by every process of the deployment

- `provider_holds`: per provider and paced account (the tutor), the moment
  before which no API call of that account may go out. A provider's rate
  limit is the account's, not one process's: the migrator that got the 429,
  a migrator restarted after it, a second migrator and the gateway all call
  for the same account, so each reads the hold here before calling and the
  one that gets a 429 writes it (issue 17). Times are the database's, so
  processes on different hosts agree.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_holds",
        sa.Column("provider", sa.Text, primary_key=True),
        sa.Column("account", sa.Text, primary_key=True),
        sa.Column("held_until", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("provider_holds")
