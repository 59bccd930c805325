"""Reading providers' throttling signals and computing waits: pure functions, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

# Zoom's per-user cap on meeting create/update calls. Source: Zoom API reference,
# "Create a meeting" (rate limit label Medium, plus 100 create/update requests per
# user per day), and Zoom's devforum answer quoting the 429 body:
# "You have exceeded the daily rate limit (100) of Meeting Create/Update API
# requests permitted for this particular user. You may resume these requests at
# GMT 00:00:00." That 429 may carry no Retry-After, so the body is what we read.
ZOOM_DAILY_MEETING_CAP = 100
ZOOM_DAILY_LIMIT_PATTERN = re.compile(r"exceeded the daily rate limit", re.IGNORECASE)

# Google Cloud daily quotas reset at midnight Pacific time (Cloud quotas docs);
# the Calendar "usage limits exceeded" 403 does not say when, so we use that.
GOOGLE_QUOTA_TZ = ZoneInfo("America/Los_Angeles")

# Google Calendar error reasons (Calendar API guide "Handle API errors"):
# 403/429 rateLimitExceeded and 403 userRateLimitExceeded are per-minute
# throttles (retry with exponential backoff, like a 429); 403 quotaExceeded
# "Calendar usage limits exceeded." is the per-user Calendar usage limit, which
# has no stated reset ("Avoid Calendar use limits": edits work again "within
# several hours"), so it is backed off, not waited until midnight; only
# dailyLimitExceeded is a daily project quota (Cloud daily quotas reset at
# midnight Pacific time).
GOOGLE_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
GOOGLE_USAGE_LIMIT_REASONS = frozenset({"quotaExceeded"})
GOOGLE_DAILY_LIMIT_REASONS = frozenset({"dailyLimitExceeded"})


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds, HTTP-date or ISO-8601.

    Zoom documents `Retry-After: 2020-05-31T00:00:00Z` (ISO-8601, not the
    RFC 9110 HTTP-date), so both date forms are accepted.
    """
    if not value:
        return None
    value = value.strip()
    now = now or datetime.now(UTC)
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    when: datetime | None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def retry_after_from_headers(
    headers: Mapping[str, str], *, now: datetime | None = None
) -> float | None:
    """The wait a response asks for: Retry-After, else X-RateLimit-Reset (epoch seconds)."""
    wait = parse_retry_after(headers.get("retry-after"), now=now)
    if wait is not None:
        return wait
    reset = headers.get("x-ratelimit-reset")
    if reset and reset.isdigit():
        now = now or datetime.now(UTC)
        return max(0.0, int(reset) - now.timestamp())
    return None


def next_utc_midnight(now: datetime | None = None) -> datetime:
    """When Zoom's daily caps reset: the next 00:00 UTC."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)


def next_pacific_midnight(now: datetime | None = None) -> datetime:
    """When Google's daily quotas reset: the next midnight in America/Los_Angeles."""
    local = (now or datetime.now(UTC)).astimezone(GOOGLE_QUOTA_TZ)
    midnight = datetime(local.year, local.month, local.day, tzinfo=GOOGLE_QUOTA_TZ)
    return (midnight + timedelta(days=1)).astimezone(UTC)


def is_zoom_daily_limit(*, headers: Mapping[str, str], message: str) -> bool:
    """Whether a Zoom 429 is the per-day cap rather than a per-second throttle."""
    if headers.get("x-ratelimit-type", "").lower() == "daily-limit":
        return True
    return bool(ZOOM_DAILY_LIMIT_PATTERN.search(message))
