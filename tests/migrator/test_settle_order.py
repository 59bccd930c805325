"""A switch is judged superseded or completed in the same order its events are published.

The gateway writes a newer switch (the connection's generation) and its outbox
row under the tutor's outbox lock. The migrator's completion used to read the
generation before taking that lock: a switch replaced while it settled read
the old generation, ended COMPLETED, and its `switch.settled` was published
after the replacement's `provider.switched` (relink soak: 1 switch in 1000,
"COMPLETED though generation 22 replaced it"). Now it decides under the lock.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Engine, text

from services.core import outbox
from services.core.settings import CommonSettings
from services.migrator.adapters.db.common import complete_and_report, make_async_engine
from tests.migrator.factory import Factory


async def test_a_switch_replaced_while_it_settles_ends_superseded(
    engine: Engine, settings: CommonSettings, factory: Factory
) -> None:
    tutor = await factory.tutor(provider="zoom")
    first = factory.switch(tutor, to_provider="google_meet", publish=False)
    with engine.begin() as conn:
        # The migrator's progress: planned, every row settled (it had none).
        conn.execute(
            text(
                "INSERT INTO provider_switches (id, tutor_id, from_provider, to_provider, "
                "generation, state) SELECT id, tutor_id, from_provider, to_provider, "
                "generation, 'MIGRATING' FROM switch_requests WHERE id = :id"
            ),
            {"id": first},
        )

    # The gateway's next switch, between its connection change and its commit:
    # it holds the tutor's outbox lock while it appends its provider.switched.
    gateway = engine.connect()
    pending = gateway.begin()
    gateway.execute(
        text(
            "UPDATE tutor_video_provider_connections SET generation = generation + 1 "
            "WHERE tutor_id = :t"
        ),
        {"t": tutor.id},
    )
    gateway.execute(
        text("SELECT pg_advisory_xact_lock(:cls, :key)"),
        {"cls": outbox.OUTBOX_LOCK_CLASS, "key": outbox.lock_key(tutor.id)},
    )

    migrator = make_async_engine(settings.database_url, pool_size=1)

    async def settle() -> list[dict[str, Any]]:
        async with migrator.begin() as conn:
            report = await complete_and_report(conn, [str(first)], topics=settings)
            await outbox.append_group_async(conn, report)
            return report

    try:
        settling = asyncio.create_task(settle())
        await asyncio.sleep(1.0)  # let it reach the lock (it waits there, or decided before)
        pending.commit()
        report = await asyncio.wait_for(settling, timeout=30)
    finally:
        gateway.close()
        await migrator.dispose()

    assert [r["payload"]["state"] for r in report] == ["SUPERSEDED"]
    with engine.connect() as conn:
        state = conn.execute(
            text("SELECT state FROM provider_switches WHERE id = :id"), {"id": first}
        ).scalar_one()
    assert state == "SUPERSEDED"
