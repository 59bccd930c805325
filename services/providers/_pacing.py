"""Per-account pacing: a 429's Retry-After holds back every call for that account.

A provider's rate limit is per account (Zoom: per user; Google: per user and
calendar), so its Retry-After speaks for the account, not for the one call
that got it. Several calls of one account are often in flight together (the
migrator works several sessions of a tutor at once; a Meet create polls its
conference), and each must wait until the stated time has passed.

Which account a call is for is set by `AuthorizedSession` around each
operation (`calls_for`), in a context variable, so every request the client
makes inside it — in-place retries and conference polls included — is paced
without each method passing a key along. A call made outside any session
(the gateway's code exchange) is not paced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from services.providers._errors import HeldBackError

_account: ContextVar[str | None] = ContextVar("relink_provider_account", default=None)


@contextmanager
def calls_for(account: str) -> Iterator[None]:
    """Every provider call made inside is paced as `account`'s."""
    token = _account.set(account)
    try:
        yield
    finally:
        _account.reset(token)


def current_account() -> str | None:
    """The account the calls being made now are for, if a session said so."""
    return _account.get()


class AccountPacer:
    """When each account may call again; one per client (so per provider), per process."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._until: dict[str, float] = {}

    def hold(self, account: str, wait_s: float) -> None:
        """No call for `account` before `wait_s` from now (a later hold never shortens one)."""
        until = self._clock() + max(0.0, wait_s)
        self._until[account] = max(until, self._until.get(account, 0.0))

    def remaining(self, account: str) -> float:
        """Seconds until `account` may call again (0: now)."""
        until = self._until.get(account)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._until[account]  # passed: forget it, so the map stays small
            return 0.0
        return left

    async def wait(self, account: str, *, max_wait_s: float, provider: str) -> None:
        """Wait until `account` may call; a longer wait than `max_wait_s` goes back to the caller.

        Raises `HeldBackError` (a `RateLimitedError`) with the time left,
        without calling the provider: as a 429 with that Retry-After would, so
        callers handle both alike.
        """
        while (left := self.remaining(account)) > 0:
            if left > max_wait_s:
                raise HeldBackError(
                    "held back: the provider asked this account to wait before calling again",
                    provider=provider,
                    retry_after_s=left,
                )
            await self._sleep(left)
