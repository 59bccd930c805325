"""One backoff helper and one retry policy for every retry loop in relink.

Everything that waits before trying again (a provider call, a migration row,
the relay after a broker error, an email after an SMTP refusal) asks a
`Backoff` for the wait before retry number `n` (1-based: the first retry is
n=1). The ceiling doubles from `base_s` up to `cap_s`; `jitter` chooses how
much of the ceiling is waited:

- ``"none"``: exactly the ceiling (one process retrying its own loop, where
  nobody else competes for the same resource: the relay, the notifier);
- ``"full"``: uniform in [0, ceiling] — spreads many clients apart (AWS
  Architecture Blog, "Exponential Backoff And Jitter"; Google's Calendar
  error guide asks for exponential backoff on 5xx and rate-limit errors);
- ``"equal"``: half the ceiling always, plus uniform in [0, ceiling/2] — for
  limits that last hours, where a retry seconds later cannot help.

`Outage` is a loop's view of a dependency that went away (PostgreSQL, Kafka):
a growing wait between attempts, and one log line when it goes and one when
it is back.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Literal

from services.core.logs import IdsLogger

Jitter = Literal["none", "full", "equal"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff from `base_s`, doubling, capped at `cap_s`."""

    base_s: float
    cap_s: float
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.cap_s < 0:
            raise ValueError("backoff times must not be negative")

    def ceiling_s(self, n: int) -> float:
        """The longest wait before retry `n` (0 for n <= 0)."""
        if n <= 0:
            return 0.0
        return float(min(self.cap_s, self.base_s * 2.0 ** min(n - 1, 62)))

    def delay_s(self, n: int, *, rng: random.Random | None = None) -> float:
        """The wait before retry `n` (1-based), with this backoff's jitter."""
        ceiling = self.ceiling_s(n)
        if self.jitter == "none" or ceiling == 0.0:
            return ceiling
        draw = (rng or random).uniform
        if self.jitter == "full":
            return draw(0.0, ceiling)
        return ceiling / 2 + draw(0.0, ceiling / 2)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to retry: attempts in all, how to wait between them, the longest wait accepted.

    `max_wait_s` bounds a wait someone else imposes (a provider's Retry-After):
    a caller told to wait longer gives up, or parks the work, instead of
    holding a worker for minutes.
    """

    max_attempts: int
    backoff: Backoff
    max_wait_s: float = math.inf

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def exhausted(self, attempts: int) -> bool:
        """Whether `attempts` made so far leave none to make."""
        return attempts >= self.max_attempts

    def delay_s(self, n: int, *, rng: random.Random | None = None) -> float:
        """The wait before retry `n` (1-based)."""
        return self.backoff.delay_s(n, rng=rng)


# The wait between attempts while PostgreSQL or Kafka is away: soon at first,
# then every 15 s at most, so a loop is back within seconds of the server.
OUTAGE_BACKOFF = Backoff(base_s=0.5, cap_s=15.0, jitter="full")


class Outage:
    """A loop's view of one thing it depends on (PostgreSQL, Kafka): away or back.

    While it is away the loop waits `delay_s` between attempts (this backoff,
    growing) and says so once, when it goes; it says once more when it is back.
    A traceback per attempt, every poll interval for the whole outage, is what
    this replaces.
    """

    def __init__(self, what: str, *, log: IdsLogger, backoff: Backoff = OUTAGE_BACKOFF) -> None:
        self.what = what
        self.backoff = backoff
        self.log = log
        self.failures = 0
        self._since = 0.0
        self._next_try = 0.0

    @property
    def away(self) -> bool:
        return self.failures > 0

    def due(self) -> bool:
        """Whether a loop that ticks on its own clock (a timer) should try now."""
        return time.monotonic() >= self._next_try

    @property
    def wait_s(self) -> float:
        """How long until the next attempt is due (0 when it is)."""
        return max(0.0, self._next_try - time.monotonic())

    def failed(self, exc: BaseException) -> float:
        """One more failed attempt; the wait before the next one."""
        self.failures += 1
        if self.failures == 1:
            self._since = time.monotonic()
            self.log.warning("%s unavailable (%s); retrying with backoff", self.what, exc)
        delay = self.backoff.delay_s(self.failures)
        self._next_try = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        """An attempt got through: back, if it was away."""
        if self.failures:
            self.log.info(
                "%s available again after %.0fs (%d failed attempts)",
                self.what,
                time.monotonic() - self._since,
                self.failures,
            )
            self.failures = 0
            self._next_try = 0.0
