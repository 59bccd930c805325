"""The provider sessions on a tutor's tokens, shared by the executor and the rollback.

One `AuthorizedSession` per tutor and connection generation, so a tutor's rows
share one refresh of a rotating refresh token; refreshed tokens are saved back
(encrypted) into the slot they came from.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from services.core.logs import get_logger
from services.migrator.adapters.db.token_slots import ConnectionState, TokenSlots
from services.providers import AuthorizedSession, ProviderClient, TokenSet

log = get_logger(__name__)


@dataclass
class ConnectionCache:
    """One `AuthorizedSession` per tutor and connection generation, shared by its rows."""

    tokens: TokenSlots
    clients: dict[str, ProviderClient]
    sessions: dict[str, tuple[int, AuthorizedSession]] = field(default_factory=dict)
    _reading: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def session_for(self, tutor_id: str, *, generation: int) -> AuthorizedSession | None:
        cached = self.sessions.get(tutor_id)
        if cached and cached[0] == generation:
            return cached[1]
        # One read per tutor: its first rows arrive together, and each would
        # otherwise read and decrypt the same connection.
        lock = self._reading.setdefault(tutor_id, asyncio.Lock())
        async with lock:
            # Another row of the same tutor may have cached a session while we
            # waited: share it, or two sessions would refresh one rotating
            # refresh token (Zoom) and the loser would look revoked.
            cached = self.sessions.get(tutor_id)
            if cached and cached[0] == generation:
                return cached[1]
            connection = await self.tokens.connection(tutor_id)
            if connection is None or connection.generation != generation:
                return None
            return self._cache(connection)

    async def reload(self, tutor_id: str, *, used: TokenSet) -> bool:
        """Re-read the tutor's tokens; True when they changed (another process refreshed them)."""
        connection = await self.tokens.connection(tutor_id)
        if connection is None:
            return False
        fresh = self.tokens.tokens_of(connection)
        if fresh.refresh_token == used.refresh_token and fresh.access_token == used.access_token:
            return False
        self._cache(connection)
        return True

    async def session_at(self, tutor_id: str, provider: str) -> AuthorizedSession | None:
        """A session on the tutor's tokens for `provider`, current or kept previous (uncached).

        Deleting meetings after a rollback or a newer switch needs the
        connection the meetings were made with, which may be the previous one.
        """
        slot = await self.tokens.tokens_at(tutor_id, provider)
        if slot is None or provider not in self.clients:
            return None

        async def save(tokens: TokenSet) -> None:
            await self.tokens.save_slot_tokens(slot, tokens)

        return AuthorizedSession(
            self.clients[provider], slot.tokens, on_refresh=save, paced_as=tutor_id
        )

    def forget(self, tutor_id: str) -> None:
        self.sessions.pop(tutor_id, None)

    def _cache(self, connection: ConnectionState) -> AuthorizedSession:
        tutor, generation = connection.tutor_id, connection.generation

        async def save(tokens: TokenSet) -> None:
            await self.tokens.save_tokens(tutor_id=tutor, generation=generation, tokens=tokens)
            log.info("tokens refreshed", extra={"tutor_id": tutor, "generation": generation})

        session = AuthorizedSession(
            self.clients[connection.provider],
            self.tokens.tokens_of(connection),
            on_refresh=save,
            # Paced as the tutor's account: a Retry-After holds back all its rows.
            paced_as=tutor,
        )
        self.sessions[tutor] = (generation, session)
        return session
