"""The service API's tables: API keys, idempotent requests, users and sessions by platform id.

API keys are `rk_<id>_<secret>`: the id is public and stored as is, the secret
is 32 random bytes of which only the SHA-256 is kept, compared in constant
time. An idempotent request is claimed by inserting its row (the primary key
makes one caller the owner), answered by filling it in, and given back by
deleting it when the request failed, so the platform can send it again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.core import events
from services.core.db.models import ApiKey, IdempotentRequest, SessionStatus, SwitchRequest, User
from services.core.db.models import Session as SessionRow
from services.core.messages import SessionCancelled
from services.oauth_gateway.adapters.db.common import add_event

KEY_PREFIX = "rk_"
SCOPES = ("users:read", "users:write", "sessions:read", "sessions:write", "switches:read")
# An in-progress claim older than this was abandoned (its process died): taken over.
ABANDONED_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class IssuedKey:
    id: str
    name: str
    scopes: tuple[str, ...]
    secret: str  # the whole key, shown once

    @property
    def token(self) -> str:
        return self.secret


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class Claim:
    """What claiming an idempotency key found."""

    owner: bool  # this request goes ahead
    status_code: int | None = None  # a finished answer to repeat
    response: Any = None
    conflict: str | None = None  # why the repeat is refused


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_key(presented: str) -> tuple[str, str] | None:
    """(key id, whole key) of a presented `rk_<id>_<secret>`, or None if it is not one."""
    if not presented.startswith(KEY_PREFIX):
        return None
    rest = presented[len(KEY_PREFIX) :]
    key_id, sep, secret = rest.partition("_")
    if not sep or not key_id or not secret or len(presented) > 200:
        return None
    return f"{KEY_PREFIX}{key_id}", presented


class PlatformStore:
    """PostgreSQL for the service API (synchronous; the use cases run it on worker threads)."""

    def __init__(self, sessions: sessionmaker[Session], *, topics: events.TopicNames) -> None:
        self._sessions = sessions
        self._topics = topics

    # -- API keys ------------------------------------------------------------

    def create_key(self, name: str, scopes: tuple[str, ...]) -> IssuedKey:
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
        if not name.strip():
            raise ValueError("give the key a name (who uses it)")
        key_id = f"{KEY_PREFIX}{secrets.token_hex(6)}"
        whole = f"{key_id}_{secrets.token_urlsafe(32)}"
        with self._sessions.begin() as s:
            s.add(
                ApiKey(
                    id=key_id,
                    name=name.strip(),
                    secret_sha256=_digest(whole),
                    scopes=" ".join(sorted(set(scopes))),
                )
            )
        return IssuedKey(key_id, name.strip(), tuple(sorted(set(scopes))), whole)

    def api_keys(self) -> list[KeyInfo]:
        with self._sessions() as s:
            rows = s.scalars(select(ApiKey).order_by(ApiKey.created_at)).all()
            return [
                KeyInfo(
                    r.id,
                    r.name,
                    tuple(r.scopes.split()),
                    r.created_at,
                    r.revoked_at,
                    r.last_used_at,
                )
                for r in rows
            ]

    def revoke_key(self, key_id: str, *, now: datetime) -> bool:
        with self._sessions.begin() as s:
            done = s.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=now)
                .returning(ApiKey.id)
            ).first()
            return done is not None

    def authenticate(self, presented: str, *, now: datetime) -> tuple[str, tuple[str, ...]] | None:
        """(key id, scopes) of a live key matching `presented`, or None."""
        parts = split_key(presented)
        if parts is None:
            return None
        key_id, whole = parts
        with self._sessions.begin() as s:
            row = s.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                return None
            if not hmac.compare_digest(row.secret_sha256, _digest(whole)):
                return None
            # Coarse (a write per minute at most), so reads stay reads.
            if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
                row.last_used_at = now
            return row.id, tuple(row.scopes.split())

    # -- idempotent requests -------------------------------------------------

    def claim(self, key_id: str, key: str, request_sha256: bytes, *, now: datetime) -> Claim:
        with self._sessions.begin() as s:
            inserted = s.execute(
                pg_insert(IdempotentRequest)
                .values(api_key_id=key_id, key=key, request_sha256=request_sha256, created_at=now)
                .on_conflict_do_nothing()
                .returning(IdempotentRequest.key)
            ).first()
            if inserted is not None:
                return Claim(owner=True)
            row = s.execute(
                select(IdempotentRequest)
                .where(IdempotentRequest.api_key_id == key_id, IdempotentRequest.key == key)
                .with_for_update()
            ).scalar_one()
            if row.request_sha256 != request_sha256:
                return Claim(
                    owner=False,
                    conflict="this Idempotency-Key was used for a different request",
                )
            if row.status_code is not None:
                return Claim(owner=False, status_code=row.status_code, response=row.response)
            if now - row.created_at < ABANDONED_AFTER:
                return Claim(
                    owner=False, conflict="a request with this Idempotency-Key is in progress"
                )
            row.created_at = now  # abandoned by a process that died: this one takes it
            return Claim(owner=True)

    def answer(self, key_id: str, key: str, status_code: int, response: Any) -> None:
        with self._sessions.begin() as s:
            s.execute(
                update(IdempotentRequest)
                .where(IdempotentRequest.api_key_id == key_id, IdempotentRequest.key == key)
                .values(status_code=status_code, response=response)
            )

    def give_back(self, key_id: str, key: str) -> None:
        with self._sessions.begin() as s:
            s.execute(
                delete(IdempotentRequest).where(
                    IdempotentRequest.api_key_id == key_id,
                    IdempotentRequest.key == key,
                    IdempotentRequest.status_code.is_(None),
                )
            )

    # -- users -----------------------------------------------------------------

    def upsert_user(
        self, external_id: str, *, role: str, name: str, email: str, timezone: str
    ) -> tuple[User, bool]:
        """The user with this platform id, created or updated; and whether it was created.

        The role of an existing user never changes (their sessions and
        connection depend on it): a different role is a ValueError.
        """
        try:
            return self._upsert_user(
                external_id, role=role, name=name, email=email, timezone=timezone
            )
        except IntegrityError as exc:
            # users.email is unique: another user (or a concurrent upsert) has it.
            raise ValueError(f"the email {email!r} belongs to another user") from exc

    def _upsert_user(
        self, external_id: str, *, role: str, name: str, email: str, timezone: str
    ) -> tuple[User, bool]:
        with self._sessions.begin() as s:
            row = s.scalars(
                select(User).where(User.external_id == external_id).with_for_update()
            ).one_or_none()
            if row is None:
                row = User(
                    id=uuid.uuid4(),
                    external_id=external_id,
                    role=role,
                    name=name,
                    email=email,
                    timezone=timezone,
                )
                s.add(row)
                s.flush()
                created = True
            else:
                if row.role != role:
                    raise ValueError(f"user {external_id!r} is a {row.role}; a role never changes")
                row.name, row.email, row.timezone = name, email, timezone
                created = False
            s.flush()
            s.expunge(row)
            return row, created

    def user(self, external_id: str) -> User | None:
        with self._sessions() as s:
            row = s.scalars(select(User).where(User.external_id == external_id)).one_or_none()
            if row is not None:
                s.expunge(row)
            return row

    # -- switches --------------------------------------------------------------

    def switch_owner(self, switch_id: uuid.UUID) -> uuid.UUID | None:
        """The tutor whose switch this is (the gateway's request); None: no such switch."""
        with self._sessions() as s:
            owner: uuid.UUID | None = s.scalar(
                select(SwitchRequest.tutor_id).where(SwitchRequest.id == switch_id)
            )
            return owner

    # -- sessions --------------------------------------------------------------

    def session(self, external_id: str) -> SessionRow | None:
        with self._sessions() as s:
            row = s.scalars(
                select(SessionRow).where(SessionRow.external_id == external_id)
            ).one_or_none()
            if row is not None:
                s.expunge(row)
            return row

    def set_status(
        self,
        external_id: str,
        status: SessionStatus,
        *,
        now: datetime,
        refusal: Callable[[str, str], str | None],
    ) -> tuple[SessionRow, str | None] | None:
        """Set a session's status; the row after, and its status before (None: no such session).

        `refusal(before, after)` is asked under the row's lock: a reason raises ValueError.
        A session becoming CANCELLED gets its `session.cancelled` in the same
        transaction (the outbox row is its last write): the migrator deletes
        the meeting it names, retrying until it is gone, and the notifier tells
        the student. A repeat of CANCELLED changes nothing and says nothing.
        """
        with self._sessions.begin() as s:
            row = s.scalars(
                select(SessionRow).where(SessionRow.external_id == external_id).with_for_update()
            ).one_or_none()
            if row is None:
                return None
            before = row.status
            why = refusal(before, status.value)
            if why is not None:
                raise ValueError(why)
            if before != status.value:
                row.status = status.value
                row.updated_at = now
                s.flush()
                if status == SessionStatus.CANCELLED:
                    row.cancelled_at = now  # its meetings are relink's to delete now
                    s.flush()
                    add_event(
                        self._topics,
                        s,
                        SessionCancelled(
                            tutor_id=str(row.tutor_id),
                            session_id=str(row.id),
                            student_id=str(row.student_id),
                            scheduled_start_at=row.scheduled_start_at,
                            previous_status=before,
                            provider=row.provider if row.meeting_external_id else None,
                            meeting_external_id=row.meeting_external_id or None,
                            cancelled_at=now,
                        ),
                        tutor_id=row.tutor_id,
                        now=now,
                    )
            s.flush()
            s.expunge(row)
            return row, before
