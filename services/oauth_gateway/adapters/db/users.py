"""The users the gateway shows and acts for, and the database liveness probe."""

from __future__ import annotations

import uuid

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from services.core.db.models import User


class UserStore:
    """Reads of the users table."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory

    def user(self, user_id: uuid.UUID) -> User | None:
        with self._sessions() as s:
            return s.get(User, user_id)

    def users(self, *, limit: int = 100) -> list[User]:
        with self._sessions() as s:
            return list(s.scalars(select(User).order_by(User.role.desc(), User.name).limit(limit)))

    def ping(self) -> None:
        with self._sessions() as s:
            s.execute(text("SELECT 1"))
