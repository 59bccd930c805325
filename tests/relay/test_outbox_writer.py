"""The one outbox writer (`services.core.outbox`) against real PostgreSQL.

Many transactions append for the same tutors at once, each sleeping a random
while before and after its append, and each records its commit position from a
sequence bumped right before COMMIT. Per tutor, outbox id order must equal that
commit order: otherwise the relay, publishing in id order, would publish a
later commit first (or a reader at a high-water mark would skip a row).
Without the tutor lock these tests fail.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, text

from services.core import events, outbox
from services.core.settings import CommonSettings
from services.migrator.adapters.db.common import make_async_engine

SOURCE = "/relink/tests"
PER_TUTOR = 16


def two_tutors() -> tuple[str, str]:
    """Two tutor ids whose lock keys differ (a collision would only serialise them)."""
    while True:
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        if outbox.lock_key(a) != outbox.lock_key(b):
            return a, b


def row(topics: CommonSettings, tutor_id: str, n: int) -> dict[str, Any]:
    return events.outbox_row(
        "provider.switched",
        {
            "switch_id": str(uuid.uuid4()),
            "tutor_id": tutor_id,
            "from_provider": "zoom",
            "to_provider": "google_meet",
            "generation": n + 1,
            "switched_at": "2026-01-01T00:00:00+00:00",
        },
        tutor_id=tutor_id,
        source=SOURCE,
        topics=topics,
    )


@pytest.fixture
def probe(engine: Engine) -> Iterator[None]:
    """A side table: each transaction's commit position, bumped right before COMMIT."""
    with engine.begin() as conn:
        conn.execute(text("CREATE SEQUENCE commit_seq"))
        conn.execute(text("CREATE TABLE commit_probe (event_id uuid PRIMARY KEY, seq bigint)"))
    yield


RECORD_COMMIT = text(
    "INSERT INTO commit_probe SELECT e, nextval('commit_seq') FROM unnest(CAST(:ids AS uuid[])) e"
)


def assert_id_order_is_commit_order(engine: Engine, tutors: tuple[str, ...]) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT o.aggregate_id, o.id, p.seq FROM outbox o "
                "JOIN commit_probe p ON p.event_id = o.event_id ORDER BY o.id"
            )
        ).all()
    seqs: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        seqs[r.aggregate_id].append(r.seq)
    for tutor in tutors:
        assert len(seqs[tutor]) >= PER_TUTOR
        # Rows of one transaction share a commit position; across transactions,
        # a higher id must never have committed before a lower one.
        assert seqs[tutor] == sorted(seqs[tutor]), (
            f"tutor {tutor}: commit order by id {seqs[tutor]}"
        )


def test_concurrent_sync_appends_for_one_tutor_commit_in_id_order(
    engine: Engine, probe: None
) -> None:
    topics = CommonSettings()
    tutors = two_tutors()
    rng = random.Random(17)
    plan = [
        (t, n, rng.random() * 0.02, rng.random() * 0.04) for n in range(PER_TUTOR) for t in tutors
    ]

    def one(tutor: str, n: int, before: float, after: float) -> None:
        values = row(topics, tutor, n)
        with engine.begin() as conn:
            time.sleep(before)
            outbox.append(conn, tutor, [values])
            time.sleep(after)
            conn.execute(RECORD_COMMIT, {"ids": [values["event_id"]]})

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(one, *p) for p in plan]:
            future.result()
    assert_id_order_is_commit_order(engine, tutors)


def test_concurrent_async_appends_commit_in_id_order_per_tutor(
    database_url: str, engine: Engine, probe: None
) -> None:
    """The migrator's entry points: single-tutor appends and group commits for both tutors."""
    topics = CommonSettings()
    tutors = two_tutors()
    rng = random.Random(18)

    async def main() -> None:
        aengine = make_async_engine(database_url, pool_size=8)
        limit = asyncio.Semaphore(8)

        async def one(n: int, group: bool, before: float, after: float) -> None:
            async with limit, aengine.begin() as conn:
                await asyncio.sleep(before)
                if group:
                    values = [row(topics, t, n) for t in tutors]
                    await outbox.append_group_async(conn, values)
                else:
                    values = [row(topics, tutors[n % 2], n)]
                    await outbox.append_async(conn, tutors[n % 2], values)
                await asyncio.sleep(after)
                await conn.execute(RECORD_COMMIT, {"ids": [v["event_id"] for v in values]})

        try:
            await asyncio.gather(
                *(
                    one(n, rng.random() < 0.3, rng.random() * 0.02, rng.random() * 0.04)
                    for n in range(3 * PER_TUTOR)
                )
            )
        finally:
            await aengine.dispose()

    asyncio.run(main())
    assert_id_order_is_commit_order(engine, tutors)


def test_different_tutors_do_not_wait_for_each_other_and_one_tutor_does(engine: Engine) -> None:
    topics = CommonSettings()
    a, b = two_tutors()
    holder = engine.connect()
    holder.begin()
    outbox.append(holder, a, [row(topics, a, 1)])  # tutor a's lock, held until commit

    def write(tutor: str, n: int) -> None:
        with engine.begin() as conn:
            outbox.append(conn, tutor, [row(topics, tutor, n)])

    try:
        other = threading.Thread(target=write, args=(b, 1), daemon=True)
        other.start()
        other.join(timeout=60)  # a hang guard, not a speed limit
        assert not other.is_alive(), "a writer for tutor b waited for tutor a's open transaction"

        same = threading.Thread(target=write, args=(a, 2), daemon=True)
        same.start()
        assert wait_for_blocked_writer(engine), "a second writer for tutor a did not wait"
        assert same.is_alive()
        holder.commit()
        same.join(timeout=60)
        assert not same.is_alive()
    finally:
        holder.close()
    with engine.connect() as conn:
        order = (
            conn.execute(
                text(
                    "SELECT payload->>'generation' FROM outbox WHERE aggregate_id = :a ORDER BY id"
                ),
                {"a": a},
            )
            .scalars()
            .all()
        )
    assert order == ["2", "3"]


def wait_for_blocked_writer(engine: Engine) -> bool:
    """Until someone waits on an outbox lock (or give up after a minute)."""
    deadline = time.monotonic() + 60
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND classid = :cls AND NOT granted"
                ),
                {"cls": outbox.OUTBOX_LOCK_CLASS},
            ).scalar_one()
            conn.rollback()
            if waiting:
                return True
            time.sleep(0.05)
    return False
