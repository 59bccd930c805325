"""The platform's service API: API keys, idempotent requests, the platform's own ids

- `api_keys`: the platform backend's credentials (issue 19). The key id is
  public (`rk_…`); only the SHA-256 of the secret part is stored (the secret
  is 256 random bits, so a plain hash is enough: nothing to brute-force).
  Several may be active at once (rotation); `revoked_at` ends one.
- `idempotent_requests`: one row per (API key, `Idempotency-Key`): the
  request's hash and, once it finished, the answer a repeat gets back.
- `users.external_id`, `sessions.external_id`: the platform's own ids, so it
  never has to learn relink's.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("secret_sha256", sa.LargeBinary, nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "idempotent_requests",
        sa.Column(
            "api_key_id",
            sa.Text,
            sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("request_sha256", sa.LargeBinary, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("response", JSONB, nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.add_column("users", sa.Column("external_id", sa.Text, nullable=True))
    op.create_unique_constraint("uq_users_external_id", "users", ["external_id"])
    op.add_column("sessions", sa.Column("external_id", sa.Text, nullable=True))
    op.create_unique_constraint("uq_sessions_external_id", "sessions", ["external_id"])


def downgrade() -> None:
    op.drop_constraint("uq_sessions_external_id", "sessions")
    op.drop_column("sessions", "external_id")
    op.drop_constraint("uq_users_external_id", "users")
    op.drop_column("users", "external_id")
    op.drop_table("idempotent_requests")
    op.drop_table("api_keys")
