"""What a migration is, pure: eligibility, supersession, outcomes of a failed attempt.

No I/O here. The executor translates provider errors into a `Failure`, asks
`decide(...)` what to do, and the store carries the decision out.
"""

from __future__ import annotations

import enum
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.core import switching
from services.core.backoff import Backoff, RetryPolicy

# The switch's rules live in core.switching; these are their string forms for SQL parameters.
ELIGIBLE_STATUSES = tuple(s.value for s in switching.ELIGIBLE_SESSION_STATUSES)
UNSETTLED_STATES = tuple(s.value for s in switching.UNSETTLED)
DROPPED_SWITCH_STATES = tuple(sorted(s.value for s in switching.DROPPED))


@dataclass(frozen=True, slots=True)
class SwitchRef:
    """The switch an event names, as the database holds it."""

    id: str
    tutor_id: str
    from_provider: str
    to_provider: str
    generation: int
    state: str


def is_superseded(
    switch: SwitchRef, *, connection_provider: str | None, connection_generation: int | None
) -> bool:
    """A newer switch (a higher generation, or another provider now) replaced this one."""
    if connection_generation is None or connection_provider is None:
        return True
    return connection_generation > switch.generation or connection_provider != switch.to_provider


def final_switch_state(*, failed: int) -> str:
    """The state a switch ends in once every row is settled.

    The issue calls the second one PARTIAL; the schema's enum (shared with the
    gateway and the page) names it COMPLETED_WITH_FAILURES.
    """
    return switching.final_state(failed=failed).value


class FailureKind(enum.StrEnum):
    """What went wrong with one attempt, in the migrator's words."""

    RATE_LIMITED = "rate_limited"  # 429 with a wait longer than the client waits in place
    QUOTA_EXCEEDED = "quota_exceeded"  # a daily cap: nothing succeeds before it resets
    RECONNECT_REQUIRED = "reconnect_required"  # grant revoked; the tutor must connect again
    TRANSIENT = "provider_error"  # 5xx, timeouts: back off and try again
    REJECTED = "invalid_request"  # the provider refused the request itself
    # Google's "Calendar usage limits exceeded": no reset time given; longer and longer waits
    USAGE_LIMITED = "usage_limited"
    NO_JOIN_LINK = "no_join_link"  # the provider made the meeting without a join link
    # This process lacks what it needs (a token key): retried like a transient
    # failure (another instance may have it), never sent to the provider.
    CONFIGURATION = "configuration_error"


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt: its kind, a safe detail, and any wait the provider asked for."""

    kind: FailureKind
    detail: str
    wait_s: float | None = None
    resets_at: datetime | None = None
    # How many usage-limit refusals in a row came before this one (USAGE_LIMITED).
    streak: int = 0


USAGE_LIMIT_BACKOFF = Backoff(base_s=60.0, cap_s=3600.0, jitter="equal")


@dataclass(frozen=True, slots=True)
class RowRetry:
    """How a failed row is retried: transient failures, and Google's usage limits.

    Transient failures use full jitter. Google's Calendar usage limits: users
    "should be able to edit their calendars normally again within several
    hours" (Google Workspace Admin Help, "Avoid Calendar use limits") and the
    Calendar error guide asks for exponential backoff: from a minute,
    doubling, at most an hour apart; "equal" jitter always waits half, since a
    limit that lasts hours is not helped by a retry seconds later.
    """

    transient: RetryPolicy
    usage: Backoff = USAGE_LIMIT_BACKOFF


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Try this row again at `at`; `pause_tutor` pushes the tutor's other rows back too."""

    at: datetime
    pause_tutor: bool = False
    counts_as_attempt: bool = True


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Report the session failed; `all_remaining` fails the switch's other rows too."""

    reason: str
    retryable: bool
    all_remaining: bool = False


Decision = RetryLater | GiveUp


def decide(
    failure: Failure,
    *,
    attempts: int,
    now: datetime,
    policy: RowRetry,
    rng: random.Random | None = None,
) -> Decision:
    """What to do after a failed attempt (the `attempts`-th) of one row."""
    if failure.kind is FailureKind.QUOTA_EXCEEDED:
        resets_at = failure.resets_at or now + timedelta(hours=1)
        # Soonest first survives the wait: the claim orders by start time.
        return RetryLater(at=max(resets_at, now), pause_tutor=True, counts_as_attempt=False)
    if failure.kind is FailureKind.RATE_LIMITED:
        wait = (
            failure.wait_s
            if failure.wait_s is not None
            else policy.transient.delay_s(attempts, rng=rng)
        )
        return RetryLater(
            at=now + timedelta(seconds=wait), pause_tutor=True, counts_as_attempt=False
        )
    if failure.kind is FailureKind.USAGE_LIMITED:
        # Not an attempt: the session waits, however long Google's limit lasts,
        # until it is moved or its start passes (then it is skipped).
        wait = policy.usage.delay_s(failure.streak + 1, rng=rng)
        return RetryLater(
            at=now + timedelta(seconds=wait), pause_tutor=True, counts_as_attempt=False
        )
    if failure.kind is FailureKind.NO_JOIN_LINK:
        return GiveUp(reason=failure.kind.value, retryable=False)
    if failure.kind is FailureKind.RECONNECT_REQUIRED:
        return GiveUp(reason=failure.kind.value, retryable=True, all_remaining=True)
    if failure.kind is FailureKind.REJECTED:
        return GiveUp(reason=failure.kind.value, retryable=False)
    # TRANSIENT and CONFIGURATION: back off, and give up (retryable) after the attempts.
    if policy.transient.exhausted(attempts):
        return GiveUp(reason=failure.kind.value, retryable=True)
    return RetryLater(at=now + timedelta(seconds=policy.transient.delay_s(attempts, rng=rng)))


_USAGE_STREAK = re.compile(r"^usage_limited #(\d+):")


def usage_limit_error(streak: int, detail: str) -> str:
    """The row's `last_error` after a usage-limit refusal: it counts the refusals in a row."""
    return f"{FailureKind.USAGE_LIMITED.value} #{streak + 1}: {detail}"


def usage_streak(last_error: str | None) -> int:
    """How many usage-limit refusals in a row the row's `last_error` records (0: none).

    The count lives in the error text, so the backoff grows across claims
    and processes without a column of its own.
    """
    found = _USAGE_STREAK.match(last_error or "")
    return int(found.group(1)) if found else 0
