"""Pure migration logic: supersession and what a failed attempt leads to.

Which sessions a switch moves is decided by the planning query: see
tests/migrator/test_eligibility.py.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

import pytest

from services.core.backoff import Backoff, RetryPolicy
from services.core.events import load_schema
from services.migrator.domain import (
    Failure,
    FailureKind,
    GiveUp,
    RetryLater,
    RowRetry,
    SwitchRef,
    decide,
    final_switch_state,
    is_superseded,
)

NOW = datetime(2030, 1, 6, 9, 0, tzinfo=UTC)
POLICY = RowRetry(transient=RetryPolicy(max_attempts=3, backoff=Backoff(base_s=1.0, cap_s=30.0)))
SWITCH = SwitchRef(
    id="s",
    tutor_id="t",
    from_provider="zoom",
    to_provider="google_meet",
    generation=3,
    state="PENDING",
)


@pytest.mark.parametrize(
    ("provider", "generation", "superseded"),
    [
        ("google_meet", 3, False),
        ("google_meet", 4, True),
        ("zoom", 3, True),
        (None, None, True),
    ],
)
def test_a_switch_is_superseded_by_a_newer_connection(
    provider: str | None, generation: int | None, superseded: bool
) -> None:
    assert (
        is_superseded(SWITCH, connection_provider=provider, connection_generation=generation)
        is superseded
    )


def test_final_state_names_failures() -> None:
    assert final_switch_state(failed=0) == "COMPLETED"
    assert final_switch_state(failed=2) == "COMPLETED_WITH_FAILURES"


def test_a_quota_waits_for_the_reset_and_pauses_the_tutor() -> None:
    resets = NOW + timedelta(hours=15)
    decision = decide(
        Failure(FailureKind.QUOTA_EXCEEDED, "cap", resets_at=resets),
        attempts=1,
        now=NOW,
        policy=POLICY,
    )
    assert decision == RetryLater(at=resets, pause_tutor=True, counts_as_attempt=False)


def test_a_429_waits_exactly_what_the_provider_said() -> None:
    decision = decide(
        Failure(FailureKind.RATE_LIMITED, "slow down", wait_s=7), attempts=1, now=NOW, policy=POLICY
    )
    assert decision == RetryLater(
        at=NOW + timedelta(seconds=7), pause_tutor=True, counts_as_attempt=False
    )


def test_transient_failures_back_off_with_jitter_then_give_up_retryable() -> None:
    rng = random.Random(1)
    first = decide(
        Failure(FailureKind.TRANSIENT, "503"), attempts=1, now=NOW, policy=POLICY, rng=rng
    )
    assert isinstance(first, RetryLater)
    assert NOW <= first.at <= NOW + timedelta(seconds=1)
    second = decide(
        Failure(FailureKind.TRANSIENT, "503"), attempts=2, now=NOW, policy=POLICY, rng=rng
    )
    assert isinstance(second, RetryLater) and second.at <= NOW + timedelta(seconds=2)
    last = decide(Failure(FailureKind.TRANSIENT, "503"), attempts=3, now=NOW, policy=POLICY)
    assert last == GiveUp(reason="provider_error", retryable=True)


def test_backoff_is_capped() -> None:
    assert all(POLICY.transient.delay_s(50) <= 30.0 for _ in range(100))


def test_a_revoked_grant_fails_everything_left_for_reconnection() -> None:
    decision = decide(
        Failure(FailureKind.RECONNECT_REQUIRED, "x"), attempts=1, now=NOW, policy=POLICY
    )
    assert decision == GiveUp(reason="reconnect_required", retryable=True, all_remaining=True)


def test_a_rejected_request_is_not_retried() -> None:
    decision = decide(Failure(FailureKind.REJECTED, "400"), attempts=1, now=NOW, policy=POLICY)
    assert decision == GiveUp(reason="invalid_request", retryable=False)


def test_a_missing_token_key_is_retried_within_the_attempts_then_fails_retryable() -> None:
    missing = Failure(FailureKind.CONFIGURATION, "token key id 'k2' not configured")
    first = decide(missing, attempts=1, now=NOW, policy=POLICY)
    assert isinstance(first, RetryLater)
    assert (first.pause_tutor, first.counts_as_attempt) == (False, True)
    last = decide(missing, attempts=3, now=NOW, policy=POLICY)
    assert last == GiveUp(reason="configuration_error", retryable=True)


def test_session_failed_lists_exactly_the_reasons_the_migrator_gives_up_with() -> None:
    # issue 20: derived from the code -- every failure kind, after the last attempt
    given_up = set()
    for kind in FailureKind:
        decision = decide(Failure(kind, "x"), attempts=99, now=NOW, policy=POLICY)
        if isinstance(decision, GiveUp):
            given_up.add(decision.reason)
    reason = load_schema("session.failed")["properties"]["reason"]
    assert sorted(given_up) == reason["x-enum"]
    for code in given_up:  # the description names each, and the pattern accepts it
        assert f"`{code}`" in reason["description"]
        assert re.fullmatch(reason["pattern"], code)
