"""The account email kept with the previous connection's tokens

- `tutor_video_provider_connections.previous_provider_account_email`: the
  email of the provider account the `previous_*` tokens belong to. A switch
  moves the current email here with the tokens; a rollback swaps it back, so
  the restored connection shows its own account email again (issue 17,
  defect 6: it answered `provider_account_email: null`).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tutor_video_provider_connections",
        sa.Column("previous_provider_account_email", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_column("tutor_video_provider_connections", "previous_provider_account_email")
