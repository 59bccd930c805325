"""Zoom's webhook rules (pure): signature, staleness, URL validation, parsing; the setting."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from services.oauth_gateway.adapters.web import zoom_events
from services.oauth_gateway.errors import NotificationRefused
from services.oauth_gateway.settings import DEV_ZOOM_WEBHOOK_SECRET_TOKEN, GatewaySettings

NOW = datetime(2030, 1, 5, 9, 0, tzinfo=UTC)
KEYS = "k1:" + "A" * 43


def ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def test_signature_is_zooms_v0_hmac() -> None:
    body = b'{"event":"x"}'
    expected = hmac.new(b"secret", b"v0:123:" + body, hashlib.sha256).hexdigest()
    assert zoom_events.signature("secret", timestamp="123", body=body) == f"v0={expected}"


def test_verify_accepts_a_fresh_genuine_notification_only() -> None:
    body = b'{"event":"app_deauthorized","payload":{"user_id":"u"}}'
    ts = ms(NOW)
    good = zoom_events.signature("secret", timestamp=ts, body=body)
    zoom_events.verify("secret", timestamp=ts, given=good, body=body, now=NOW, max_skew_s=300)
    cases = {
        "unsigned": dict(timestamp=ts, given=None, body=body, now=NOW),
        "bad_signature": dict(timestamp=ts, given=good, body=body + b" ", now=NOW),
        "stale": dict(timestamp=ts, given=good, body=body, now=NOW + timedelta(seconds=301)),
    }
    for reason, kwargs in cases.items():
        with pytest.raises(NotificationRefused) as refused:
            zoom_events.verify("secret", max_skew_s=300, **kwargs)  # type: ignore[arg-type]
        assert refused.value.reason == reason


def test_url_validation_answer() -> None:
    answer = zoom_events.url_validation_answer("secret", "plain")
    assert answer == {
        "plainToken": "plain",
        "encryptedToken": hmac.new(b"secret", b"plain", hashlib.sha256).hexdigest(),
    }


def test_parse_the_events_relink_reads() -> None:
    deauth = json.dumps(
        {
            "event": "app_deauthorized",
            "event_ts": 1,
            "payload": {
                "user_id": "u1",
                "account_id": "a1",
                "deauthorization_time": "2030-01-05T08:00:00.000Z",
            },
        }
    ).encode()
    parsed = zoom_events.parse(deauth, now=NOW)
    assert parsed == zoom_events.Deauthorized("u1", "a1", datetime(2030, 1, 5, 8, tzinfo=UTC))
    deleted = json.dumps(
        {"event": "meeting.deleted", "payload": {"object": {"id": 81234567890, "host_id": "h"}}}
    ).encode()
    assert zoom_events.parse(deleted, now=NOW) == zoom_events.MeetingDeleted(
        "81234567890", "h", NOW
    )
    assert zoom_events.parse(b'{"event":"meeting.started","payload":{}}', now=NOW) == (
        zoom_events.Other("meeting.started")
    )
    for bad in (b"nope", b'{"payload":{}}', b'{"event":"app_deauthorized","payload":{}}'):
        with pytest.raises(NotificationRefused):
            zoom_events.parse(bad, now=NOW)


def test_webhook_secret_token_setting() -> None:
    dev = GatewaySettings()
    assert dev.zoom_webhook_secret_token.get_secret_value() == DEV_ZOOM_WEBHOOK_SECRET_TOKEN
    production: dict[str, Any] = dict(
        RELINK_DEV_MODE=False, RELINK_TOKEN_KEYS=KEYS, RELINK_GATEWAY_SESSION_SECRET="s" * 40
    )
    # Not set outside dev mode: the endpoint stays closed (no key, nothing verifiable).
    assert GatewaySettings(**production).zoom_webhook_secret_token.get_secret_value() == ""
    with pytest.raises(Exception, match="dev Zoom webhook secret token"):
        GatewaySettings(
            **production, RELINK_ZOOM_WEBHOOK_SECRET_TOKEN=SecretStr(DEV_ZOOM_WEBHOOK_SECRET_TOKEN)
        )
    real = GatewaySettings(**production, RELINK_ZOOM_WEBHOOK_SECRET_TOKEN=SecretStr("z" * 22))
    assert "z" * 22 not in repr(real)
