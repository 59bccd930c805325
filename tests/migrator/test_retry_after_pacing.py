"""A 429's Retry-After holds back every call for that account, not just the row that got it.

The model is `test_provider_limits.py::test_rows_claimed_ahead_wait_out_a_429_too`
(one create at a time). Here several rows of one tutor are at the provider at
once, with latency so they overlap: when one of them gets the 429, the others
are mid-call, and what they send next (a Meet conference poll, a create in
place of a finished one, an in-place retry) must wait too. The simulator
counts every API call of the account that arrives before the Retry-After has
passed (`early_calls`).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from tests.migrator.conftest import session_rows, settled, wait_for
from tests.migrator.factory import Factory

OTHER = {"zoom": "google_meet", "google_meet": "zoom"}


@pytest.mark.parametrize(
    ("to_provider", "in_place_wait_s"),
    [
        # The client hands a long wait back: the row is parked, the others must not call.
        ("google_meet", "0"),
        # The client waits in place (production's default allows 60 s): so must the others.
        ("google_meet", "10"),
        ("zoom", "10"),
    ],
)
async def test_a_retry_after_holds_back_every_row_of_the_account(
    engine: Engine,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
    to_provider: str,
    in_place_wait_s: str,
) -> None:
    tutor = await factory.tutor(provider=OTHER[to_provider])
    sessions = factory.sessions(tutor, count=12, provider=OTHER[to_provider])
    # Each Meet link is polled (events.get) twice before it is ready.
    polls = {"conference_pending_reads": 2} if to_provider == "google_meet" else {}
    await sim_admin.faults(
        to_provider, tutor.email, burst_429=1, retry_after_s=3, latency_ms=150, **polls
    )
    migrator = start_migrator(
        RELINK_MIGRATOR_CONCURRENCY="20",
        RELINK_MIGRATOR_TUTOR_CONCURRENCY="6",
        RELINK_PROVIDER_MAX_RETRY_WAIT_S=in_place_wait_s,
        RELINK_PROVIDER_MAX_ATTEMPTS="3",
    )
    switch_id = factory.switch(tutor, to_provider=to_provider)
    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert (switch.state, switch.sessions_migrated) == ("COMPLETED", 12)
    assert all(r.provider == to_provider for r in session_rows(engine, sessions))
    account = await sim_admin.account(to_provider, tutor.email)
    assert account["early_calls"] == 0
    assert len(account["meetings"]) == 12
    assert "migration crashed" not in migrator.output()
