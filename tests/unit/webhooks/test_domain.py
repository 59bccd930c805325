"""The webhook dispatcher's pure rules: what it signs is what the Standard Webhooks
reference library accepts, and nothing else; the retry schedule; when to disable."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.webhooks import domain
from services.webhooks.errors import SecretError
from services.webhooks.settings import WebhooksSettings


def test_the_reference_library_verifies_what_relink_signs_and_nothing_altered() -> None:
    secret = domain.format_secret(os.urandom(domain.SECRET_BYTES))
    body = domain.body_of(
        "switch.settled", datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC), {"state": "COMPLETED"}, "e1"
    )
    now = int(datetime.now(UTC).timestamp())
    headers = domain.headers(
        domain.parse_secret(secret), message_id="msg_e1", timestamp=now, body=body
    )
    payload = Webhook(secret).verify(body, headers)
    assert payload == {
        "type": "switch.settled",
        "timestamp": "2031-01-02T03:04:05Z",
        "id": "e1",
        "data": {"state": "COMPLETED"},
    }
    for altered in (
        (body.replace("COMPLETED", "ROLLED_BACK"), headers),
        (body, {**headers, "webhook-id": "msg_e2"}),
        (body, {**headers, "webhook-timestamp": str(now + 1)}),
    ):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(*altered)
    other = domain.format_secret(os.urandom(domain.SECRET_BYTES))
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


@pytest.mark.parametrize("bad", ["", "abc", "whsec_", "whsec_***", "whsec_QUJD"])
def test_a_secret_must_be_whsec_base64_of_24_to_64_bytes(bad: str) -> None:
    with pytest.raises(SecretError):
        domain.parse_secret(bad)


def test_the_default_schedule_is_standard_webhooks_and_then_gives_up() -> None:
    schedule = WebhooksSettings().retry_schedule
    assert schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert [domain.retry_delay_s(n, schedule) for n in range(1, 9)] == [*schedule, None]


def test_an_endpoint_is_disabled_only_when_the_streak_is_long_in_attempts_and_in_time() -> None:
    start = datetime(2031, 1, 1, tzinfo=UTC)
    late = start + timedelta(days=5)

    def disable(streak: int, now: datetime) -> bool:
        return domain.should_disable(
            streak=streak, failing_since=start, now=now, after_failures=20, after_s=5 * 86400.0
        )

    assert not disable(19, late)
    assert not disable(500, late - timedelta(seconds=1))
    assert disable(20, late)
