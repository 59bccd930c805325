"""Per-account pacing (`services/providers/_pacing.py`): pure, on a fake clock."""

from __future__ import annotations

import pytest

from services.providers import HeldBackError, RateLimitedError
from services.providers._pacing import AccountPacer, calls_for, current_account


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_hold_is_the_accounts_and_never_shortened() -> None:
    clock = FakeClock()
    pacer = AccountPacer(clock=clock, sleep=clock.sleep)
    pacer.hold("tutor-a", 3)
    pacer.hold("tutor-a", 1)  # a shorter Retry-After later does not cut the first
    assert pacer.remaining("tutor-a") == 3
    assert pacer.remaining("tutor-b") == 0
    clock.now += 3
    assert pacer.remaining("tutor-a") == 0


async def test_a_short_hold_is_waited_in_place() -> None:
    clock = FakeClock()
    pacer = AccountPacer(clock=clock, sleep=clock.sleep)
    pacer.hold("tutor-a", 2.5)
    await pacer.wait("tutor-a", max_wait_s=10, provider="zoom")
    assert clock.slept == [2.5]
    await pacer.wait("tutor-b", max_wait_s=10, provider="zoom")
    assert clock.slept == [2.5]


async def test_a_longer_hold_goes_back_as_a_rate_limit_with_the_time_left() -> None:
    clock = FakeClock()
    pacer = AccountPacer(clock=clock, sleep=clock.sleep)
    pacer.hold("tutor-a", 3)
    clock.now += 1
    with pytest.raises(HeldBackError) as caught:
        await pacer.wait("tutor-a", max_wait_s=0, provider="google_meet")
    assert isinstance(caught.value, RateLimitedError)
    assert caught.value.retry_after_s == 2
    assert clock.slept == []


def test_calls_for_names_the_account_only_inside() -> None:
    assert current_account() is None
    with calls_for("tutor-a"):
        assert current_account() == "tutor-a"
    assert current_account() is None


class FakeShared:
    """Another process's holds (`SharedHolds`), on the same fake clock."""

    def __init__(self, clock: FakeClock, *, broken: bool = False) -> None:
        self.clock = clock
        self.broken = broken
        self.until: dict[tuple[str, str], float] = {}

    async def remaining(self, provider: str, account: str) -> float:
        if self.broken:
            raise ConnectionError("database down")
        return max(0.0, self.until.get((provider, account), 0.0) - self.clock.now)

    async def hold(self, provider: str, account: str, wait_s: float) -> None:
        if self.broken:
            raise ConnectionError("database down")
        key = (provider, account)
        self.until[key] = max(self.until.get(key, 0.0), self.clock.now + wait_s)


async def test_a_hold_another_process_recorded_is_waited_out_here() -> None:
    clock = FakeClock()
    shared = FakeShared(clock)
    theirs = AccountPacer(provider="zoom", shared=shared, clock=clock, sleep=clock.sleep)
    ours = AccountPacer(provider="zoom", shared=shared, clock=clock, sleep=clock.sleep)
    await theirs.record("tutor-a", 2)
    await ours.wait("tutor-a", max_wait_s=10, provider="zoom")
    assert clock.slept == [2]
    await ours.wait("tutor-a", max_wait_s=10, provider="zoom")
    assert clock.slept == [2]
    # another provider's or account's hold is not ours
    await theirs.record("tutor-b", 5)
    other = AccountPacer(provider="google_meet", shared=shared, clock=clock, sleep=clock.sleep)
    await other.wait("tutor-b", max_wait_s=0, provider="google_meet")
    with pytest.raises(HeldBackError):
        await ours.wait("tutor-b", max_wait_s=0, provider="zoom")


async def test_the_shared_store_down_keeps_this_process_holds_and_calls_on() -> None:
    clock = FakeClock()
    pacer = AccountPacer(
        provider="zoom", shared=FakeShared(clock, broken=True), clock=clock, sleep=clock.sleep
    )
    await pacer.record("tutor-a", 3)  # not raised: the 429 is still handled
    assert pacer.remaining("tutor-a") == 3
    await pacer.wait("tutor-b", max_wait_s=0, provider="zoom")  # no hold known: calls
    with pytest.raises(HeldBackError):
        await pacer.wait("tutor-a", max_wait_s=0, provider="zoom")


async def test_a_429_learnt_while_the_shared_store_answers_is_not_missed() -> None:
    """The store's answer takes a round trip; a 429 this process got meanwhile still holds."""
    clock = FakeClock()
    pacer: AccountPacer

    class SlowShared(FakeShared):
        async def remaining(self, provider: str, account: str) -> float:
            pacer.hold(account, 2)  # another row's 429 arrived during this query
            return 0.0

    pacer = AccountPacer(provider="zoom", shared=SlowShared(clock), clock=clock, sleep=clock.sleep)
    with pytest.raises(HeldBackError):
        await pacer.wait("tutor-a", max_wait_s=0, provider="zoom")
