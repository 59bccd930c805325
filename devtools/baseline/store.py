"""PostgreSQL adapter of the baseline: OAuth states, the connection, the tutor's sessions.

Async SQLAlchemy on psycopg 3, one short transaction per statement group, as
the brief's Supabase calls were: each session's update commits on its own.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from devtools.baseline.errors import StateRejected
from services.core.db.models import Booking, Connection, OAuthState, Session, SessionStatus
from services.core.settings import normalize_database_url
from services.core.tokens import CODE_VERIFIER, TokenCipher
from services.providers import Meeting, ProviderAccount, TokenSet

ELIGIBLE = (SessionStatus.SCHEDULED.value, SessionStatus.JOIN_OPEN.value)


@dataclass(frozen=True, slots=True)
class SessionToMigrate:
    """A future session and what its new meeting needs from the booking."""

    id: uuid.UUID
    topic: str
    start: datetime
    duration_min: int
    timezone: str


def make_async_engine(url: str, *, pool_size: int) -> AsyncEngine:
    return create_async_engine(
        normalize_database_url(url), pool_size=pool_size, max_overflow=pool_size
    )


class BaselineStore:
    """The rows the inline callback reads and writes."""

    def __init__(self, engine: AsyncEngine, *, cipher: TokenCipher) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._cipher = cipher

    async def create_state(
        self, *, tutor_id: uuid.UUID, provider: str, verifier: str, ttl: timedelta
    ) -> str:
        """A fresh single-use state holding the encrypted PKCE verifier."""
        state = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        async with self._sessions() as s, s.begin():
            s.add(
                OAuthState(
                    state=state,
                    tutor_id=tutor_id,
                    provider=provider,
                    code_verifier_encrypted=self._cipher.encrypt(
                        verifier, tutor_id=tutor_id, field=CODE_VERIFIER
                    ),
                    created_at=now,
                    expires_at=now + ttl,
                )
            )
        return state

    async def consume_state(self, *, state: str, provider: str) -> tuple[uuid.UUID, str]:
        """Mark the state used; its tutor and PKCE verifier, or `StateRejected`."""
        now = datetime.now(UTC)
        async with self._sessions() as s, s.begin():
            row = (
                await s.scalars(
                    select(OAuthState).where(OAuthState.state == state).with_for_update()
                )
            ).one_or_none()
            if row is None or row.provider != provider:
                raise StateRejected("This sign-in link is not one we issued.")
            if row.used_at is not None:
                raise StateRejected("This sign-in link was already used.")
            if row.expires_at <= now:
                raise StateRejected("This sign-in link has expired.")
            row.used_at = now
            verifier = self._cipher.decrypt(
                row.code_verifier_encrypted, tutor_id=row.tutor_id, field=CODE_VERIFIER
            )
            return row.tutor_id, verifier

    async def save_connection(
        self, *, tutor_id: uuid.UUID, provider: str, tokens: TokenSet, account: ProviderAccount
    ) -> str | None:
        """Upsert the tutor's one connection; the provider it replaced, if any."""
        now = datetime.now(UTC)
        sealed = self._cipher.seal_tokens(
            tokens.access_token, tokens.refresh_token, tutor_id=tutor_id
        )
        values = {
            "provider": provider,
            "access_token_encrypted": sealed.access,
            "refresh_token_encrypted": sealed.refresh,
            "token_expires_at": tokens.expires_at,
            "scopes": " ".join(tokens.scopes),
            "provider_account_id": account.id,
            "provider_account_email": account.email,
            "updated_at": now,
        }
        async with self._sessions() as s, s.begin():
            previous = (
                await s.scalars(
                    select(Connection.provider)
                    .where(Connection.tutor_id == tutor_id)
                    .with_for_update()
                )
            ).one_or_none()
            await s.execute(
                pg_insert(Connection)
                .values(tutor_id=tutor_id, connected_at=now, **values)
                .on_conflict_do_update(index_elements=["tutor_id"], set_=values)
            )
        return previous

    async def future_sessions(self, tutor_id: uuid.UUID) -> list[SessionToMigrate]:
        """The brief's query: SCHEDULED or JOIN_OPEN, starting now or later, with the booking."""
        query = (
            select(
                Session.id,
                Booking.topic,
                Session.scheduled_start_at,
                Session.duration_minutes,
                Booking.timezone,
            )
            .join(Booking, Booking.id == Session.booking_id)
            .where(
                Session.tutor_id == tutor_id,
                Session.status.in_(ELIGIBLE),
                Session.scheduled_start_at >= datetime.now(UTC),
            )
            .order_by(Session.scheduled_start_at)
        )
        async with self._sessions() as s:
            rows = (await s.execute(query)).all()
        return [SessionToMigrate(*row) for row in rows]

    async def update_session(self, session_id: uuid.UUID, *, meeting: Meeting) -> None:
        """Point the session at its new meeting (its own transaction, as in the brief)."""
        now = datetime.now(UTC)
        async with self._sessions() as s, s.begin():
            await s.execute(
                update(Session)
                .where(Session.id == session_id)
                .values(
                    provider=meeting.provider,
                    meeting_external_id=meeting.external_id,
                    join_url=meeting.join_url,
                    meeting_created_at=now,
                    updated_at=now,
                    version=Session.version + 1,
                )
            )
