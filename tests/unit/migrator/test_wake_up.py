"""A wake-up that arrives while a claim is under way is not lost (issue 21).

The executor sleeps between claims until woken (a plan batch recorded, a row
finished) or until its poll interval passes. A wake-up that came during a claim
that found nothing must start the next claim at once: clearing the flag after
that claim would drop it, and the new work would wait out a whole interval.
Here the interval is an hour, so a lost wake-up shows as a claim that never comes.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

from services.migrator.usecases.execute import Executor


class ClaimsDuringWhichWorkArrives(Executor):
    def __init__(self) -> None:
        outcomes = SimpleNamespace(record_meetings=None, complete_migrations=None)
        super().__init__(
            claims=cast(Any, None),
            outcomes=cast(Any, outcomes),
            connections=cast(Any, None),
            policy=cast(Any, None),
            concurrency=10,
            tutor_concurrency=2,
            poll_interval_s=3600,
            lease=timedelta(seconds=60),
        )
        self.claims_made = 0
        self.second_claim = asyncio.Event()

    async def claim_once(self) -> int:
        self.claims_made += 1
        if self.claims_made == 1:
            await asyncio.sleep(0)
            self.wake()  # a plan batch committed while this claim was reading: nothing seen yet
            return 0
        self.second_claim.set()
        self._stopping = True
        return 0


async def test_a_wake_up_during_an_empty_claim_starts_the_next_claim() -> None:
    executor = ClaimsDuringWhichWorkArrives()
    runner = asyncio.create_task(executor.run())
    try:
        await asyncio.wait_for(executor.second_claim.wait(), timeout=10)
    finally:
        runner.cancel()
    assert executor.claims_made == 2
