"""Pure logic of the gateway: sign-in tokens, CSRF, what a switch is, what the page says."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from services.core.db.models import SwitchState
from services.core.errors import ConfigurationError
from services.oauth_gateway.adapters.web.auth import (
    csrf_token,
    csrf_valid,
    issue_token,
    verify_token,
)
from services.oauth_gateway.domain import (
    ConnectOutcome,
    Progress,
    booking_refusal,
    connect_outcome,
    notice_applies,
    rollback_allowed,
    state_label,
    switch_message,
)
from services.oauth_gateway.errors import NotSignedIn
from services.oauth_gateway.metrics import GatewayMetrics
from services.oauth_gateway.settings import DEV_SESSION_SECRET, GatewaySettings

SECRET = "x" * 40


def test_token_round_trip_and_rejections() -> None:
    uid = uuid.uuid4()
    token = issue_token(uid, role="tutor", secret=SECRET, ttl_s=60, now=1000)
    principal = verify_token(token, secret=SECRET, now=1030)
    assert (principal.user_id, principal.role) == (uid, "tutor")
    with pytest.raises(NotSignedIn, match="expired"):
        verify_token(token, secret=SECRET, now=1061)
    with pytest.raises(NotSignedIn, match="signature"):
        verify_token(token, secret="y" * 40, now=1030)
    version, _payload, sig = token.split(".")
    forged = issue_token(uid, role="student", secret="z" * 40, ttl_s=60, now=1000).split(".")[1]
    with pytest.raises(NotSignedIn):
        verify_token(f"{version}.{forged}.{sig}", secret=SECRET, now=1030)
    for junk in ("", "v1", "v2.a.b", "v1..", "v1.!!.x"):
        with pytest.raises(NotSignedIn):
            verify_token(junk, secret=SECRET, now=1030)


def test_csrf_token_is_bound_to_the_session() -> None:
    a = issue_token(uuid.uuid4(), role="tutor", secret=SECRET, ttl_s=60)
    b = issue_token(uuid.uuid4(), role="tutor", secret=SECRET, ttl_s=60)
    assert csrf_valid(a, csrf_token(a, secret=SECRET), secret=SECRET)
    assert not csrf_valid(b, csrf_token(a, secret=SECRET), secret=SECRET)
    assert not csrf_valid(a, None, secret=SECRET)


def test_a_switch_is_any_change_of_provider_in_either_direction() -> None:
    assert connect_outcome(None, "zoom") is ConnectOutcome.FIRST_CONNECTION
    assert connect_outcome("zoom", "zoom") is ConnectOutcome.RECONNECTED
    assert connect_outcome("zoom", "google_meet") is ConnectOutcome.SWITCHED
    assert connect_outcome("google_meet", "zoom") is ConnectOutcome.SWITCHED


@pytest.mark.parametrize(
    ("progress", "kind", "text"),
    [
        (None, "success", "Successfully connected video provider!"),
        (Progress("COMPLETED", 0, 0, 0), "success", "Successfully connected video provider!"),
        (
            Progress("COMPLETED", 5, 5, 0),
            "success_migrated",
            "5 future sessions were automatically updated with new meeting links.",
        ),
        (
            Progress("COMPLETED", 1, 1, 0),
            "success_migrated",
            "1 future session was automatically updated",
        ),
        (
            Progress("COMPLETED_WITH_FAILURES", 5, 3, 2),
            "warning",
            "Some future sessions may need to be manually updated. "
            "Please check your sessions page.",
        ),
        (Progress("MIGRATING", 5, 1, 0), "in_progress", "Updating your future sessions"),
    ],
)
def test_the_briefs_messages(progress: Progress | None, kind: str, text: str) -> None:
    message = switch_message(progress)
    assert message.kind == kind
    assert text in message.text


def test_progress_remaining_never_negative() -> None:
    assert Progress("MIGRATING", 5, 2, 1).remaining == 2
    assert Progress("MIGRATING", 1, 2, 1).remaining == 0


def test_every_switch_state_has_words_and_no_raw_value() -> None:
    labels = {state: state_label(state) for state in SwitchState}
    for state, label in labels.items():
        assert label and not any(raw.value in label for raw in SwitchState), (state, label)
    assert len(set(labels.values())) == len(SwitchState)


def test_the_rollback_notice_only_while_rolling_back() -> None:
    assert notice_applies("rollback_requested", SwitchState.ROLLING_BACK)
    assert not notice_applies("rollback_requested", SwitchState.ROLLED_BACK)
    assert not notice_applies("rollback_requested", None)
    assert notice_applies("retry_requested", SwitchState.COMPLETED_WITH_FAILURES)
    assert not notice_applies(None, SwitchState.ROLLING_BACK)


def test_a_booking_must_start_later_than_now() -> None:
    now = datetime(2030, 1, 10, 12, 0, tzinfo=UTC)
    assert booking_refusal(now + timedelta(minutes=1), now=now) is None
    assert "past" in (booking_refusal(now - timedelta(days=2), now=now) or "")
    assert "past" in (booking_refusal(now, now=now) or "")
    assert "offset" in (booking_refusal(datetime(2030, 1, 11, 9, 0), now=now) or "")


def test_rollback_rules() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    ok = {
        "switch_state": "COMPLETED",
        "switch_generation": 2,
        "connection_generation": 2,
        "connection_provider": "zoom",
        "switch_to_provider": "zoom",
        "has_previous_tokens": True,
        "deadline": now + timedelta(hours=1),
        "now": now,
    }
    assert rollback_allowed(**ok) is None  # type: ignore[arg-type]
    assert "newer" in rollback_allowed(**ok | {"connection_generation": 3})  # type: ignore[arg-type, operator]
    assert "grace" in rollback_allowed(**ok | {"deadline": now})  # type: ignore[arg-type, operator]
    assert "already" in rollback_allowed(**ok | {"switch_state": "ROLLED_BACK"})  # type: ignore[arg-type, operator]
    assert rollback_allowed(**ok | {"has_previous_tokens": False}) is not None  # type: ignore[arg-type]


def test_settings_refuse_dev_secret_outside_dev_mode() -> None:
    keys = "k1:" + "A" * 43
    with pytest.raises(ConfigurationError):
        GatewaySettings(RELINK_DEV_MODE=False, RELINK_TOKEN_KEYS=keys)
    with pytest.raises(ConfigurationError):
        GatewaySettings(
            RELINK_DEV_MODE=False,
            RELINK_TOKEN_KEYS=keys,
            RELINK_GATEWAY_SESSION_SECRET=SecretStr(DEV_SESSION_SECRET),
        )
    with pytest.raises(ConfigurationError):
        GatewaySettings(RELINK_GATEWAY_SESSION_SECRET=SecretStr("short"))
    settings = GatewaySettings(
        RELINK_DEV_MODE=False,
        RELINK_TOKEN_KEYS=keys,
        RELINK_GATEWAY_SESSION_SECRET=SecretStr("s" * 40),
    )
    assert settings.rollback_grace_s == 86400
    assert settings.redirect_uri("zoom") == "http://127.0.0.1:18000/oauth/zoom/callback"
    assert "s" * 40 not in repr(settings)


def test_metrics_render_prometheus_text() -> None:
    metrics = GatewayMetrics()
    metrics.callback(provider="zoom", outcome="switched")
    metrics.request(route="/oauth/{provider}/callback", status=303, seconds=0.02)
    text = metrics.render().decode()
    # prometheus_client orders the labels by name
    assert 'relink_gateway_oauth_callbacks_total{outcome="switched",provider="zoom"} 1' in text
    bucket = "relink_gateway_http_request_seconds_bucket"
    route = 'route="/oauth/{provider}/callback"'
    assert f'{bucket}{{le="0.025",{route}}} 1' in text
    assert f'{bucket}{{le="0.01",{route}}} 0' in text
