"""Google's usage limits and missing links, in the pure parts: decisions, the event, the email."""

from __future__ import annotations

import copy
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.core import events
from services.core.backoff import Backoff, RetryPolicy
from services.core.events import InvalidEvent
from services.migrator.domain import (
    Failure,
    FailureKind,
    GiveUp,
    RetryLater,
    RowRetry,
    decide,
    usage_limit_error,
    usage_streak,
)
from services.notifier.adapters.emails import DelayNotice, render_delay_notice

NOW = datetime(2030, 1, 6, 9, 0, tzinfo=UTC)
POLICY = RowRetry(
    transient=RetryPolicy(max_attempts=3, backoff=Backoff(base_s=1.0, cap_s=30.0)),
    usage=Backoff(base_s=60, cap_s=3600, jitter="equal"),
)


def test_usage_limits_wait_longer_each_time_and_never_until_a_midnight() -> None:
    waits = []
    for streak in range(8):
        decision = decide(
            Failure(FailureKind.USAGE_LIMITED, "403", streak=streak),
            attempts=1,
            now=NOW,
            policy=POLICY,
            rng=random.Random(streak),
        )
        assert isinstance(decision, RetryLater)
        assert decision.pause_tutor and not decision.counts_as_attempt
        waits.append((decision.at - NOW).total_seconds())
    # Equal jitter: within [ceiling / 2, ceiling], the ceiling doubling from a minute to an hour.
    for streak, wait in enumerate(waits):
        ceiling = min(3600, 60 * 2**streak)
        assert ceiling / 2 <= wait <= ceiling
    assert max(waits) <= 3600 and waits[0] <= 60


def test_the_streak_is_counted_in_the_rows_last_error() -> None:
    assert usage_streak(None) == 0
    assert usage_streak("provider_error: 503") == 0
    first = usage_limit_error(0, "google_meet HTTP 403 [quotaExceeded]: insert event")
    assert first.startswith("usage_limited #1: ")
    assert usage_streak(first) == 1
    assert usage_streak(usage_limit_error(usage_streak(first), "again")) == 2


def test_a_meeting_without_a_link_is_given_up_not_retried() -> None:
    decision = decide(
        Failure(FailureKind.NO_JOIN_LINK, "no conferenceData"), attempts=1, now=NOW, policy=POLICY
    )
    assert decision == GiveUp(reason="no_join_link", retryable=False)


def delayed(**changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(events.load_schema("switch.delayed")["examples"][0])
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def test_switch_delayed_names_a_time_only_for_a_daily_quota() -> None:
    events.validate_payload("switch.delayed", delayed())
    events.validate_payload(
        "switch.delayed", delayed(reason="usage_limits", provider="google_meet", resumes_at=None)
    )
    with pytest.raises(InvalidEvent):
        # A daily quota has a known reset: it must say when.
        events.validate_payload("switch.delayed", delayed(resumes_at=None))
    with pytest.raises(InvalidEvent):
        # Google's usage limits give no time: the event may not promise one.
        events.validate_payload("switch.delayed", delayed(reason="usage_limits"))


def test_the_usage_limit_email_promises_no_time() -> None:
    notice = DelayNotice(
        tutor_name="Ada",
        tutor_timezone="Europe/Paris",
        to_provider="google_meet",
        total=40,
        waiting=28,
        resumes_at=None,
        setup_url="http://relink.test/tutor/video-setup",
    )
    rendered = render_delay_notice(notice)
    assert "28" in rendered.subject and "allows new events again" in rendered.subject
    for text in (rendered.subject, rendered.text, rendered.html):
        assert "midnight" not in text and "after" not in text and ":00" not in text
    assert "does not say for how" in rendered.text
    # The daily quota's email, by contrast, says when.
    dated = render_delay_notice(replace(notice, resumes_at=NOW + timedelta(hours=15)))
    assert "move after" in dated.subject
