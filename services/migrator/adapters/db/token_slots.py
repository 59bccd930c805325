"""The tutor's connection tokens, current and kept previous: read, decrypted, saved back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.core.tokens import TokenCipher
from services.providers import TokenSet


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """The tutor's connection as the migrator needs it (tokens still encrypted)."""

    tutor_id: str
    provider: str
    generation: int
    # None once the tutor removed relink's app at the provider (the gateway forgot the tokens).
    access_token_encrypted: bytes | None
    refresh_token_encrypted: bytes | None
    token_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class SlotTokens:
    """A connection's tokens for one provider: the current ones (slot "") or the kept previous."""

    tutor_id: str
    provider: str
    slot: str
    generation: int
    tokens: TokenSet


class TokenSlots:
    """A connection's tokens: read, decrypted, and saved back into the slot they came from."""

    def __init__(self, engine: AsyncEngine, *, cipher: TokenCipher) -> None:
        self.engine = engine
        self.cipher = cipher

    async def connection(self, tutor_id: str) -> ConnectionState | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT tutor_id, provider, generation, access_token_encrypted, "
                        "refresh_token_encrypted, token_expires_at "
                        "FROM tutor_video_provider_connections WHERE tutor_id = :t"
                    ),
                    {"t": tutor_id},
                )
            ).first()
        if row is None:
            return None
        return ConnectionState(
            tutor_id=str(row.tutor_id),
            provider=row.provider,
            generation=row.generation,
            access_token_encrypted=(
                bytes(row.access_token_encrypted) if row.access_token_encrypted else None
            ),
            refresh_token_encrypted=(
                bytes(row.refresh_token_encrypted) if row.refresh_token_encrypted else None
            ),
            token_expires_at=row.token_expires_at,
        )

    def tokens_of(self, connection: ConnectionState) -> TokenSet:
        """Decrypt a connection's tokens (they never leave this process)."""
        tutor = connection.tutor_id
        if connection.access_token_encrypted is None:
            # Forgotten tokens (the app was removed at the provider): an expired
            # token without a refresh token, so the first call raises
            # AuthorizationRevokedError and the rows end as reconnect_required,
            # without a request to the provider.
            return TokenSet(
                access_token="", refresh_token=None, expires_at=datetime.min.replace(tzinfo=UTC)
            )
        opened = self.cipher.open_tokens(
            connection.access_token_encrypted, connection.refresh_token_encrypted, tutor_id=tutor
        )
        return TokenSet(
            access_token=opened.access,
            refresh_token=opened.refresh,
            expires_at=connection.token_expires_at or datetime.now(UTC) + timedelta(hours=1),
        )

    def _sealed(self, tokens: TokenSet, *, tutor_id: str, prefix: str = "") -> dict[str, Any]:
        """Bind values `a`, `r`, `e`: the tokens encrypted for their (previous_?) columns."""
        # An empty refresh token is none: coalesce(:r, …) keeps the stored one.
        sealed = self.cipher.seal_tokens(
            tokens.access_token, tokens.refresh_token or None, tutor_id=tutor_id, slot=prefix
        )
        return {"a": sealed.access, "r": sealed.refresh, "e": tokens.expires_at}

    async def save_tokens(self, *, tutor_id: str, generation: int, tokens: TokenSet) -> None:
        """Persist refreshed tokens (Zoom rotated the refresh token: the old one is dead)."""
        values = {"t": tutor_id, "g": generation, **self._sealed(tokens, tutor_id=tutor_id)}
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE tutor_video_provider_connections SET access_token_encrypted = :a, "
                    "refresh_token_encrypted = coalesce(:r, refresh_token_encrypted), "
                    "token_expires_at = :e, updated_at = now() "
                    "WHERE tutor_id = :t AND generation = :g"
                ),
                values,
            )

    async def tokens_at(self, tutor_id: str, provider: str) -> SlotTokens | None:
        """The tutor's tokens for `provider`: current if connected to it, else the kept previous."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT provider, generation, access_token_encrypted, "
                        "refresh_token_encrypted, token_expires_at, previous_provider, "
                        "previous_access_token_encrypted, previous_refresh_token_encrypted, "
                        "previous_token_expires_at "
                        "FROM tutor_video_provider_connections WHERE tutor_id = :t"
                    ),
                    {"t": tutor_id},
                )
            ).first()
        if row is None:
            return None
        if row.provider == provider and row.access_token_encrypted is None:
            return None  # the app was removed at the provider: no tokens to act with
        if row.provider == provider:
            slot, access, refresh, expires = (
                "",
                row.access_token_encrypted,
                row.refresh_token_encrypted,
                row.token_expires_at,
            )
        elif row.previous_provider == provider and row.previous_access_token_encrypted:
            slot, access, refresh, expires = (
                "previous_",
                row.previous_access_token_encrypted,
                row.previous_refresh_token_encrypted,
                row.previous_token_expires_at,
            )
        else:
            return None
        opened = self.cipher.open_tokens(
            bytes(access), bytes(refresh) if refresh else None, tutor_id=tutor_id, slot=slot
        )
        tokens = TokenSet(
            access_token=opened.access,
            refresh_token=opened.refresh,
            expires_at=expires or datetime.now(UTC) + timedelta(hours=1),
        )
        return SlotTokens(
            tutor_id=tutor_id,
            provider=provider,
            slot=slot,
            generation=row.generation,
            tokens=tokens,
        )

    async def save_slot_tokens(self, slot: SlotTokens, tokens: TokenSet) -> None:
        """Persist refreshed tokens into the slot they came from (if it still holds them)."""
        if slot.slot == "":
            await self.save_tokens(
                tutor_id=slot.tutor_id, generation=slot.generation, tokens=tokens
            )
            return
        tutor = slot.tutor_id
        values = {
            "t": tutor,
            "g": slot.generation,
            "p": slot.provider,
            **self._sealed(tokens, tutor_id=tutor, prefix="previous_"),
        }
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE tutor_video_provider_connections SET "
                    "previous_access_token_encrypted = :a, "
                    "previous_refresh_token_encrypted = coalesce(:r, "
                    "previous_refresh_token_encrypted), previous_token_expires_at = :e, "
                    "updated_at = now() WHERE tutor_id = :t AND generation = :g "
                    "AND previous_provider = :p AND previous_access_token_encrypted IS NOT NULL"
                ),
                values,
            )
