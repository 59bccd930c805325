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

One process's memory is not enough: a migrator restarted after a 429, a
second migrator, and the gateway's bookings call for the same account. So a
client may be given `SharedHolds` (the deployment's PostgreSQL table,
`services/core/db/holds.py`): the process that gets a 429 writes the hold
there too, and every call reads it before going out. The shared store
failing (the database down) never stops a call: the process's own holds
still apply, and the failure is logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from services.core.logs import Throttle, get_logger
from services.providers._errors import HeldBackError

log = get_logger(__name__)
# While the database is down every call would say so: once a minute is enough.
log.logger.addFilter(Throttle(every_s=60.0))

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


class SharedHolds(Protocol):
    """Holds every process of a deployment sees (times kept by the store, not the caller)."""

    async def remaining(self, provider: str, account: str) -> float:
        """Seconds until `account` may call `provider` again (0: now)."""
        ...

    async def hold(self, provider: str, account: str, wait_s: float) -> None:
        """No call for `account` at `provider` before `wait_s` from now (never shortened)."""
        ...


class AccountPacer:
    """When each account may call again; one per client (so per provider).

    Kept in the process, and in `shared` when given (see the module's doc).
    """

    def __init__(
        self,
        *,
        provider: str = "",
        shared: SharedHolds | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.provider = provider
        self.shared = shared
        self._clock = clock
        self._sleep = sleep
        self._until: dict[str, float] = {}

    def hold(self, account: str, wait_s: float) -> None:
        """No call for `account` before `wait_s` from now (a later hold never shortens one)."""
        until = self._clock() + max(0.0, wait_s)
        self._until[account] = max(until, self._until.get(account, 0.0))

    async def record(self, account: str, wait_s: float) -> None:
        """A 429 for `account` asked for `wait_s`: hold here and, when shared, for everyone."""
        self.hold(account, wait_s)
        if self.shared is not None:
            try:
                await self.shared.hold(self.provider, account, wait_s)
            except Exception as exc:  # the store down must not turn a 429 into a crash
                log.warning(
                    "could not share a provider hold; this process still keeps it",
                    extra={"provider": self.provider, "error": type(exc).__name__},
                )

    async def _shared_remaining(self, account: str) -> float:
        if self.shared is None:
            return 0.0
        try:
            left = await self.shared.remaining(self.provider, account)
        except Exception as exc:  # the store down: this process's own holds still apply
            log.warning(
                "could not read the shared provider holds; using this process's",
                extra={"provider": self.provider, "error": type(exc).__name__},
            )
            return 0.0
        if left > 0:
            self.hold(account, left)  # kept here too: the next calls need not ask again
        return left

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
        left = await self._left(account)
        while left > 0:
            if left > max_wait_s:
                raise HeldBackError(
                    "held back: the provider asked this account to wait before calling again",
                    provider=provider,
                    retry_after_s=left,
                )
            await self._sleep(left)
            left = await self._left(account)

    async def _left(self, account: str) -> float:
        """The wait still owed: this process's hold, else the shared one."""
        left = self.remaining(account)
        if left > 0 or self.shared is None:
            return left
        left = await self._shared_remaining(account)
        # A 429 this process got while the store answered counts as well.
        return left if left > 0 else self.remaining(account)
