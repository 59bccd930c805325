"""Push-notification (watch) channels opened for a tutor's connection."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from services.core.db.models import ProviderChannel
from services.core.db.models import Session as SessionRow
from services.oauth_gateway.adapters.db.common import ELIGIBLE


class ChannelStore:
    """Remembers watch channels and the messages they have delivered."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory

    def save_channel(
        self,
        *,
        tutor_id: uuid.UUID,
        provider: str,
        channel_id: str,
        token_sha256: str,
        resource_id: str,
        generation: int,
        expires_at: datetime,
        now: datetime,
    ) -> None:
        """Remember a push-notification channel opened for the tutor's connection."""
        with self._sessions() as s, s.begin():
            s.add(
                ProviderChannel(
                    id=channel_id,
                    tutor_id=tutor_id,
                    provider=provider,
                    token_sha256=token_sha256,
                    resource_id=resource_id,
                    generation=generation,
                    expires_at=expires_at,
                    created_at=now,
                )
            )

    def channel(self, channel_id: str) -> ProviderChannel | None:
        with self._sessions() as s:
            return s.get(ProviderChannel, channel_id)

    def watched_meetings(
        self, *, tutor_id: uuid.UUID, provider: str, now: datetime, limit: int = 200
    ) -> list[tuple[uuid.UUID, str]]:
        """(session id, meeting id) of the tutor's upcoming sessions on `provider`."""
        with self._sessions() as s:
            rows = s.execute(
                select(SessionRow.id, SessionRow.meeting_external_id)
                .where(
                    SessionRow.tutor_id == tutor_id,
                    SessionRow.provider == provider,
                    SessionRow.meeting_external_id.is_not(None),
                    SessionRow.status.in_(ELIGIBLE),
                    SessionRow.scheduled_start_at >= now,
                )
                .order_by(SessionRow.scheduled_start_at)
                .limit(limit)
            ).all()
            return [(r[0], str(r[1])) for r in rows]

    def take_channel_message(self, *, channel_id: str, number: int) -> bool:
        """Advance the channel's message number; False for a number already seen (a replay)."""
        with self._sessions() as s, s.begin():
            advanced = s.execute(
                text(
                    "UPDATE provider_channels SET last_message_number = :n "
                    "WHERE id = :id AND last_message_number < :n RETURNING id"
                ),
                {"id": channel_id, "n": number},
            ).first()
            return advanced is not None
