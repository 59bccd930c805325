"""The gateway's rollback request and the migrator's rollback completion lock in one order.

Issue 17, defect 5: they locked the connection and the switch in opposite
orders, and a second rollback request racing the migrator's completion ended
in PostgreSQL's "deadlock detected" (a 503 at the gateway). Both now follow
`services.core.db.locks.LOCK_ORDER`. The race is made to happen every time: a
third transaction holds the connection row while the gateway, then the
migrator, queue behind it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import sessionmaker

from services.core.db.locks import LOCK_ORDER
from services.core.db.models import SwitchState
from services.core.settings import CommonSettings
from services.migrator.adapters.db.common import make_async_engine
from services.migrator.adapters.db.plan import PlanStore
from services.migrator.adapters.db.rollback import RollbackStore
from services.oauth_gateway.adapters.db import GatewayStore
from services.oauth_gateway.errors import RollbackNotAllowed
from tests.migrator.conftest import switch_row
from tests.migrator.factory import Factory


def lock_waiters(engine: Engine) -> int:
    """Backends of this test's database waiting for a lock."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


async def until_waiting(engine: Engine, count: int) -> None:
    for _ in range(600):
        if lock_waiters(engine) >= count:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"fewer than {count} transactions ever waited for a lock")


def test_the_lock_order_is_written_down_once() -> None:
    assert LOCK_ORDER[0] == "tutor_video_provider_connections"
    assert LOCK_ORDER.index("session_migrations") < LOCK_ORDER.index("provider_switches")


async def test_a_second_rollback_request_during_the_rollback_completion_does_not_deadlock(
    engine: Engine, settings: CommonSettings, factory: Factory
) -> None:
    tutor = await factory.tutor(provider="zoom")
    switch_id = factory.switch(tutor, to_provider="google_meet", publish=False)
    gateway = GatewayStore(sessionmaker(engine), cipher=settings.token_cipher(), topics=settings)
    gateway.request_rollback(tutor_id=tutor.id, switch_id=switch_id, now=datetime.now(UTC))
    async_engine = make_async_engine(settings.database_url, pool_size=2)
    rollbacks = RollbackStore(
        async_engine, topics=settings, plans=PlanStore(async_engine, topics=settings)
    )
    switch = await rollbacks.switch(str(switch_id))
    assert switch is not None and switch.state == SwitchState.ROLLING_BACK.value

    holder = engine.connect()
    try:
        holder.execute(
            text("SELECT 1 FROM tutor_video_provider_connections WHERE tutor_id = :t FOR UPDATE"),
            {"t": tutor.id},
        )
        # The tutor clicks "Roll back" again: the gateway queues for the connection first…
        second: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.to_thread(
                gateway.request_rollback,
                tutor_id=tutor.id,
                switch_id=switch_id,
                now=datetime.now(UTC),
            )
        )
        await until_waiting(engine, 1)
        # …then the migrator finishes the rollback.
        finishing = asyncio.ensure_future(rollbacks.finish_rollback(switch))
        await until_waiting(engine, 2)
        holder.commit()
        results: tuple[Any, Any] = await asyncio.gather(finishing, second, return_exceptions=True)
        finished, refused = results
    finally:
        holder.close()
        await async_engine.dispose()

    # The request is refused for what it is (already rolling back: a 409, not a 503),
    # and the migrator's completion went through.
    assert isinstance(refused, RollbackNotAllowed), repr(refused)
    assert not isinstance(finished, BaseException), repr(finished)
    assert finished is not None and finished.restored_provider == "zoom"
    assert switch_row(engine, switch_id).state == SwitchState.ROLLED_BACK.value
