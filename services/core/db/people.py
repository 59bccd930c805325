"""Find tutors by email or name: how an operator gets from a person to their id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Engine, func, or_, select

from services.core.db.models import Connection, User, UserRole


@dataclass(frozen=True, slots=True)
class TutorMatch:
    id: uuid.UUID
    name: str
    email: str
    provider: str | None  # the connected provider, None when not connected


def find_tutors(engine: Engine, needle: str, *, limit: int = 50) -> list[TutorMatch]:
    """Tutors whose email equals `needle` (any case), else whose name or email contains it."""
    needle = needle.strip()
    query = (
        select(User.id, User.name, User.email, Connection.provider)
        .outerjoin(
            Connection, (Connection.tutor_id == User.id) & Connection.disconnected_at.is_(None)
        )
        .where(User.role == UserRole.TUTOR.value)
        .order_by(User.name, User.email)
        .limit(limit)
    )
    with engine.connect() as conn:
        exact = conn.execute(query.where(func.lower(User.email) == needle.lower())).all()
        if exact:
            return [TutorMatch(*row) for row in exact]
        escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        rows = conn.execute(
            query.where(or_(User.name.ilike(pattern), User.email.ilike(pattern)))
        ).all()
    return [TutorMatch(*row) for row in rows]


def resolve_tutor(engine: Engine, who: str) -> uuid.UUID:
    """A tutor's id from their id or their exact email; LookupError saying why not."""
    try:
        return uuid.UUID(who)
    except ValueError:
        pass
    if "@" not in who:
        raise LookupError(
            f"{who!r} is neither a tutor id nor an email; `relink tutors find {who}` lists matches"
        )
    found = find_tutors(engine, who)
    if len(found) != 1 or found[0].email.lower() != who.strip().lower():
        raise LookupError(f"no tutor has the email {who!r}")
    return found[0].id
