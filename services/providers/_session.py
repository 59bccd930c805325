"""A connection in use: API calls with its token, refreshed and retried once on expiry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from services.providers._base import ProviderClient
from services.providers._errors import AuthorizationRevokedError, TokenExpiredError
from services.providers._models import Meeting, MeetingRequest, ProviderAccount, TokenSet
from services.providers._pacing import calls_for

T = TypeVar("T")

# Called with the new tokens after every refresh; it must persist them before
# returning, because Zoom's old refresh token is dead from now on.
TokenSaver = Callable[[TokenSet], Awaitable[None]]


class AuthorizedSession:
    """One connection's tokens and a client; refreshes when expired and on a 401, once.

    `paced_as` names the provider account its calls are paced as (a 429's
    Retry-After holds back every call of that account made through the same
    client, in any session): give the same name to every session on one
    account (the migrator uses the tutor id). Without one, the session is
    its own account.
    """

    def __init__(
        self,
        client: ProviderClient,
        tokens: TokenSet,
        *,
        on_refresh: TokenSaver,
        paced_as: str | None = None,
    ) -> None:
        self.client = client
        self.tokens = tokens
        self._on_refresh = on_refresh
        self.paced_as = paced_as or f"session:{uuid.uuid4().hex}"
        # Concurrent calls of one connection share one refresh: a second refresh
        # with Zoom's already-rotated token would fail and look like a revocation.
        self._lock = asyncio.Lock()

    async def refresh(self, *, stale: TokenSet | None = None) -> TokenSet:
        """Refresh the tokens (once for all waiters) and hand them to the saver."""
        async with self._lock:
            if stale is not None and self.tokens is not stale:
                return self.tokens
            if not self.tokens.refresh_token:
                raise AuthorizationRevokedError(
                    "no refresh token stored; reconnect required", provider=self.client.provider
                )
            fresh = await self.client.refresh(self.tokens.refresh_token)
            await self._on_refresh(fresh)
            self.tokens = fresh
            return fresh

    async def call(self, operation: Callable[[str], Awaitable[T]]) -> T:
        """Run `operation(access_token)`; on an expired token refresh and retry it once."""
        with calls_for(self.paced_as):
            tokens = self.tokens
            if tokens.expired():
                tokens = await self.refresh(stale=tokens)
            try:
                return await operation(tokens.access_token)
            except TokenExpiredError:
                tokens = await self.refresh(stale=tokens)
                return await operation(tokens.access_token)

    async def account(self) -> ProviderAccount:
        """The provider account behind this connection."""
        return await self.call(self.client.account)

    async def create_meeting(self, request: MeetingRequest) -> Meeting:
        """Create the session's meeting."""
        return await self.call(lambda token: self.client.create_meeting(token, request))

    async def find_meeting(self, request: MeetingRequest) -> Meeting | None:
        """The meeting an earlier create for `request` made (its answer may have been lost)."""
        return await self.call(lambda token: self.client.find_meeting(token, request))

    async def get_meeting(self, external_id: str) -> Meeting | None:
        """The meeting, or None when it does not exist."""
        return await self.call(lambda token: self.client.get_meeting(token, external_id))

    async def delete_meeting(self, external_id: str) -> bool:
        """Delete the meeting; False when it was already gone."""
        return await self.call(lambda token: self.client.delete_meeting(token, external_id))
