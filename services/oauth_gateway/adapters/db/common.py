"""What several parts of the gateway's store share.

The per-tutor lock (the connection row), the encrypted token columns, and
the one function that appends the gateway's outbox rows (through
`core.outbox.append`, the tutor's outbox lock: call it as the last write of
the transaction).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.core import events, outbox
from services.core.db.models import Connection, SessionStatus
from services.core.messages import Message, message_row
from services.core.tokens import TokenCipher
from services.providers import TokenSet

# `ce_source` of the gateway's events: `<RELINK_EVENTS_SOURCE_BASE>/oauth-gateway`.
SOURCE = events.Process("oauth-gateway")
ELIGIBLE = (SessionStatus.SCHEDULED.value, SessionStatus.JOIN_OPEN.value)


def lock_connection(s: Session, tutor_id: uuid.UUID) -> Connection | None:
    """The per-tutor lock: always the first row locked (`services.core.db.locks.LOCK_ORDER`)."""
    return s.scalars(
        select(Connection).where(Connection.tutor_id == tutor_id).with_for_update()
    ).one_or_none()


def current_tokens(cipher: TokenCipher, tutor_id: uuid.UUID, tokens: TokenSet) -> dict[str, Any]:
    sealed = cipher.seal_tokens(tokens.access_token, tokens.refresh_token, tutor_id=tutor_id)
    return {
        "access_token_encrypted": sealed.access,
        "refresh_token_encrypted": sealed.refresh,
        "token_expires_at": tokens.expires_at,
    }


def rebind(
    cipher: TokenCipher, row: Connection, blob: bytes | None, source: str, target: str
) -> bytes | None:
    return cipher.rebind(blob, tutor_id=row.tutor_id, source=source, target=target)


def add_event(
    topics: events.TopicNames,
    s: Session,
    message: Message,
    *,
    tutor_id: uuid.UUID,
    now: datetime,
) -> uuid.UUID:
    """Append `message`'s outbox row to the transaction (core.outbox: its last write)."""
    values = message_row(
        message,
        tutor_id=str(tutor_id),
        source=SOURCE,
        topics=topics,
        time=now,
    )
    outbox.append(s, tutor_id, [values])
    event_id: uuid.UUID = values["event_id"]
    return event_id
