"""OAuth states: the single-use `state` of a sign-in and its encrypted PKCE verifier."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from services.core.db.models import OAuthState
from services.core.tokens import CODE_VERIFIER, TokenCipher
from services.oauth_gateway.errors import StateRejected

VERIFIER_FIELD = CODE_VERIFIER


class OAuthStateStore:
    """Issues and consumes OAuth states."""

    def __init__(self, session_factory: sessionmaker[Session], *, cipher: TokenCipher) -> None:
        self._sessions = session_factory
        self._cipher = cipher

    def create_state(
        self, *, tutor_id: uuid.UUID, provider: str, verifier: str, now: datetime, ttl: timedelta
    ) -> str:
        """Store a fresh single-use state with its encrypted PKCE verifier."""
        state = secrets.token_urlsafe(32)
        with self._sessions() as s, s.begin():
            # Expired states can go: a late callback with one is rejected as unknown
            # instead of expired, which is just as safe. SKIP LOCKED keeps concurrent
            # starts from queueing behind each other's cleanup.
            s.execute(
                text(
                    "DELETE FROM oauth_states WHERE state IN (SELECT state FROM oauth_states "
                    "WHERE expires_at < :now LIMIT 100 FOR UPDATE SKIP LOCKED)"
                ),
                {"now": now},
            )
            s.add(
                OAuthState(
                    state=state,
                    tutor_id=tutor_id,
                    provider=provider,
                    code_verifier_encrypted=self._cipher.encrypt(
                        verifier, tutor_id=tutor_id, field=VERIFIER_FIELD
                    ),
                    created_at=now,
                    expires_at=now + ttl,
                )
            )
        return state

    def consume_state(
        self, *, state: str, tutor_id: uuid.UUID, provider: str, now: datetime
    ) -> str:
        """Mark the state used and return its PKCE verifier; `StateRejected` otherwise."""
        with self._sessions() as s, s.begin():
            row = s.scalars(
                select(OAuthState).where(OAuthState.state == state).with_for_update()
            ).one_or_none()
            if row is None:
                raise StateRejected(
                    "This sign-in link is not one we issued.", reason="state_unknown"
                )
            if row.tutor_id != tutor_id:
                raise StateRejected(
                    "This sign-in was started by another account.", reason="state_other_tutor"
                )
            if row.provider != provider:
                raise StateRejected(
                    "This sign-in was started for another provider.", reason="state_wrong_provider"
                )
            if row.used_at is not None:
                raise StateRejected("This sign-in link was already used.", reason="state_replayed")
            if row.expires_at <= now:
                raise StateRejected("This sign-in link has expired.", reason="state_expired")
            row.used_at = now
            return self._cipher.decrypt(
                row.code_verifier_encrypted, tutor_id=tutor_id, field=VERIFIER_FIELD
            )
