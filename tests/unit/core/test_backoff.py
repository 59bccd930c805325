"""The one backoff helper every retry loop uses."""

from __future__ import annotations

import logging
import random

import pytest

from services.core.backoff import Backoff, Outage, RetryPolicy
from services.core.logs import Throttle, get_logger


def test_without_jitter_the_wait_doubles_and_is_capped() -> None:
    backoff = Backoff(base_s=0.2, cap_s=5, jitter="none")
    delays = [backoff.delay_s(n) for n in range(0, 8)]
    assert delays[:4] == [0.0, 0.2, 0.4, 0.8]
    assert delays[-1] == 5
    assert Backoff(base_s=1, cap_s=10, jitter="none").delay_s(10_000) == 10


def test_full_jitter_stays_within_its_ceiling() -> None:
    rng = random.Random(1)
    backoff = Backoff(base_s=0.5, cap_s=4)
    draws = [backoff.delay_s(n, rng=rng) for n in range(1, 11) for _ in range(20)]
    assert all(0 <= d <= 4 for d in draws)
    assert all(0 <= backoff.delay_s(1, rng=rng) <= 0.5 for _ in range(50))
    assert len(set(draws)) > 1


def test_equal_jitter_always_waits_half_the_ceiling() -> None:
    rng = random.Random(2)
    backoff = Backoff(base_s=60, cap_s=3600, jitter="equal")
    for n, ceiling in [(1, 60), (2, 120), (7, 3600), (30, 3600)]:
        draws = [backoff.delay_s(n, rng=rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in draws)


def test_a_policy_counts_its_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, backoff=Backoff(base_s=1, cap_s=8, jitter="none"))
    assert not policy.exhausted(2)
    assert policy.exhausted(3)
    assert policy.delay_s(3) == 4


@pytest.mark.parametrize(
    "make",
    [
        lambda: Backoff(base_s=-1, cap_s=1),
        lambda: RetryPolicy(max_attempts=0, backoff=Backoff(base_s=1, cap_s=1)),
    ],
)
def test_nonsense_is_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = Outage("PostgreSQL", log=get_logger("test.outage"), backoff=Backoff(1, 8, "none"))
    with caplog.at_level(logging.INFO, logger="test.outage"):
        waits = [outage.failed(RuntimeError("connection refused")) for _ in range(6)]
        assert outage.away and not outage.due()
        outage.succeeded()
        outage.succeeded()
    assert waits == [1, 2, 4, 8, 8, 8]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("PostgreSQL unavailable (connection refused)")
    assert "available again" in lines[1] and "6 failed attempts" in lines[1]
    assert not outage.away and outage.due()


def test_a_throttle_lets_one_line_of_a_kind_through_per_window() -> None:
    throttle = Throttle(every_s=60)

    def record(msg: str, at: float, *args: object) -> logging.LogRecord:
        made = logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, args, None)
        made.created = at
        return made

    passed = [
        throttle.filter(r)
        for r in (
            record("Unable connect to node with id %s", 0, 1),
            record("Unable connect to node with id %s", 0.1, 1),
            record("Failed fetch messages", 0.2),
            record("Unable connect to node with id %s", 30, 1),
        )
    ]
    assert passed == [True, False, True, False]
    later = record("Unable connect to node with id %s", 61, 1)
    assert throttle.filter(later)
    assert later.getMessage().endswith("(2 more like it in the last 60s)")
    info = logging.LogRecord("aiokafka", logging.INFO, __file__, 1, "joined", None, None)
    assert throttle.filter(info) and throttle.filter(info)
