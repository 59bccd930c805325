"""Pure parts of the provider clients: Retry-After, quota resets, backoff, retry decisions."""

from __future__ import annotations

from datetime import UTC, datetime

from services.core.backoff import Backoff
from services.providers import (
    DailyQuotaExhaustedError,
    InvalidRequestError,
    ProviderUnavailableError,
    RateLimitedError,
    RetryPolicy,
    TokenSet,
)
from services.providers._models import google_event_id, idempotency_key
from services.providers._ratelimit import (
    is_zoom_daily_limit,
    next_pacific_midnight,
    next_utc_midnight,
    parse_retry_after,
    retry_after_from_headers,
)
from services.providers._retry import wait_before_retry

NOW = datetime(2030, 6, 1, 22, 30, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=4, max_wait_s=30, backoff=Backoff(base_s=1, cap_s=8))


def test_retry_after_forms() -> None:
    assert parse_retry_after("7", now=NOW) == 7
    assert parse_retry_after("Sat, 01 Jun 2030 22:30:10 GMT", now=NOW) == 10
    assert parse_retry_after("2030-06-02T00:00:00Z", now=NOW) == 5400
    assert parse_retry_after("soon", now=NOW) is None
    assert parse_retry_after(None) is None
    assert (
        retry_after_from_headers({"x-ratelimit-reset": str(int(NOW.timestamp()) + 3)}, now=NOW) == 3
    )


def test_quota_resets() -> None:
    assert next_utc_midnight(NOW) == datetime(2030, 6, 2, tzinfo=UTC)
    # 22:30 UTC is 15:30 in Los Angeles (PDT, UTC-7): the reset is 07:00 UTC next day.
    assert next_pacific_midnight(NOW) == datetime(2030, 6, 2, 7, tzinfo=UTC)


def test_zoom_daily_limit_is_read_from_body_or_headers() -> None:
    body = "You have exceeded the daily rate limit (100) of Meeting Create/Update API requests"
    assert is_zoom_daily_limit(headers={}, message=body)
    assert is_zoom_daily_limit(headers={"x-ratelimit-type": "Daily-limit"}, message="")
    assert not is_zoom_daily_limit(headers={}, message="maximum per-second rate limit")


def test_retry_decisions() -> None:
    limited = RateLimitedError("slow down", provider="zoom", retry_after_s=12)
    assert wait_before_retry(limited, attempt=0, policy=POLICY, idempotent=False) == 12
    too_long = RateLimitedError("slow down", provider="zoom", retry_after_s=31)
    assert wait_before_retry(too_long, attempt=0, policy=POLICY, idempotent=True) is None
    assert wait_before_retry(limited, attempt=3, policy=POLICY, idempotent=True) is None
    quota = DailyQuotaExhaustedError("cap", provider="zoom", resets_at=NOW)
    assert wait_before_retry(quota, attempt=0, policy=POLICY, idempotent=True) is None
    bad = InvalidRequestError("bad", provider="zoom", status=400)
    assert wait_before_retry(bad, attempt=0, policy=POLICY, idempotent=True) is None
    down = ProviderUnavailableError("down", provider="zoom", status=503)
    assert wait_before_retry(down, attempt=0, policy=POLICY, idempotent=False) is not None
    crashed = ProviderUnavailableError("oops", provider="zoom", status=500)
    assert wait_before_retry(crashed, attempt=0, policy=POLICY, idempotent=False) is None
    assert wait_before_retry(crashed, attempt=0, policy=POLICY, idempotent=True) is not None
    unsent = ProviderUnavailableError("refused", provider="zoom", request_sent=False)
    assert wait_before_retry(unsent, attempt=0, policy=POLICY, idempotent=False) is not None


def test_event_ids_are_stable_base32hex() -> None:
    event_id = google_event_id("switch", "session")
    assert event_id == google_event_id("switch", "session") != google_event_id("switch", "other")
    assert set(event_id) <= set("0123456789abcdefghijklmnopqrstuv") and 5 <= len(event_id) <= 1024
    assert idempotency_key("a", "b") != idempotency_key("a", "c")


def test_token_values_stay_out_of_repr() -> None:
    tokens = TokenSet(access_token="AT-secret", refresh_token="RT-secret", expires_at=NOW)
    assert "secret" not in repr(tokens) and "secret" not in str(tokens)
    assert tokens.expired(now=NOW)
