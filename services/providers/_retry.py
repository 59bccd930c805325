"""Retrying a provider call: honour Retry-After, back off with jitter on 5xx and timeouts."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from services.core.backoff import RetryPolicy
from services.core.logs import get_logger
from services.providers._errors import (
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)

log = get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryNotice:
    """Told to the caller before each wait: what failed and how long we wait."""

    operation: str
    attempt: int
    wait_s: float
    error: ProviderError


RetryObserver = Callable[[RetryNotice], None]


def wait_before_retry(
    error: ProviderError,
    *,
    attempt: int,
    policy: RetryPolicy,
    idempotent: bool,
    rng: random.Random | None = None,
) -> float | None:
    """The wait before the next attempt, or None when this error must not be retried."""
    if attempt + 1 >= policy.max_attempts:
        return None
    if isinstance(error, RateLimitedError):
        if error.retry_after_s is None:
            return policy.delay_s(attempt + 1, rng=rng)
        # Waiting less than asked earns another 429; waiting longer than the
        # caller allows is the caller's call (it can park the work), so give up.
        return error.retry_after_s if error.retry_after_s <= policy.max_wait_s else None
    if isinstance(error, ProviderUnavailableError):
        # A create that may have reached the provider is not repeated blindly:
        # Zoom has no idempotency key, so a second POST could make a second meeting.
        if error.request_sent and not idempotent and error.status not in (502, 503, 504, 429):
            return None
        return policy.delay_s(attempt + 1, rng=rng)
    return None


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    *,
    operation: str,
    policy: RetryPolicy,
    idempotent: bool = True,
    observer: RetryObserver | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run `call`, retrying rate limits and outages as `policy` allows; re-raise the rest."""
    attempt = 0
    while True:
        try:
            return await call()
        except ProviderError as error:
            wait = wait_before_retry(error, attempt=attempt, policy=policy, idempotent=idempotent)
            if wait is None:
                raise
            log.info(
                "provider call %s failed (%s); retrying in %.2fs (attempt %d of %d)",
                operation,
                type(error).__name__,
                wait,
                attempt + 2,
                policy.max_attempts,
            )
            if observer is not None:
                observer(
                    RetryNotice(operation=operation, attempt=attempt, wait_s=wait, error=error)
                )
            await sleep(wait)
            attempt += 1
