"""The one way to write outbox rows: `append(conn, tutor_id, rows)`.

Every producer (the gateway's requests, the migrator's outcomes, rollbacks and
delays) appends its events here, in the transaction that makes the change they
report; the relay publishes them later, in `outbox.id` order per tutor.

Why a lock. `outbox.id` is an identity column: a transaction draws its ids
when it inserts, but its rows become visible when it *commits*. Two
transactions writing for the same tutor can therefore commit in the opposite
order of their ids -- say the migrator's `switch.delayed` draws id 10, a
concurrent `session.migrated` of the same tutor draws id 11 and commits first,
and the relay (which publishes in id order) sends 11, then 10 once it commits:
the tutor's consumers see the events out of the order they happened in, and a
reader that keeps a high-water mark on `id` would skip 10 for good.

So `append` first takes a transaction-scoped advisory lock on the tutor
(`pg_advisory_xact_lock(OUTBOX_LOCK_CLASS, lock_key(tutor_id))`) and only then
inserts. The lock is released by COMMIT or ROLLBACK, so a second writer for the
same tutor draws its ids only after the first one's rows are committed (or
gone): for each tutor, id order = commit order, for every producer. Writers
for different tutors take different keys and never wait for each other (two
tutors whose keys collide merely take turns). The lock class keeps these
locks apart from the relay's slot leases (`services/relay/domain.py`
`SLOT_LOCK_CLASS`). This is the same idea as pyeventsourcing's PostgreSQL
recorder, which locks the events table (`_lock_table`) before inserting so
that notification ids never interleave between concurrent writers -- scoped
here to one tutor instead of the whole table, because order is only promised
per tutor. `tests/relay/test_outbox_writer.py` shows both properties with
concurrent transactions, and fails without the lock.

Rule for callers: append as the *last write* of the transaction, then commit.
The lock is held until commit, so anything done after `append` runs while
other writers of that tutor wait; and a transaction that held the tutor lock
and then waited for a row another writer has locked (while that writer waits
for the tutor lock) would deadlock. Writing every other row first keeps both
away. (Updating rows the transaction has already locked, as the migrator's
completion check does, is fine.)

Two thin entry points over one statement builder: `append` for a sync
SQLAlchemy `Connection` or ORM `Session` (the gateway), `append_async` for an
`AsyncConnection` (the migrator). `append_group_async` serves a group commit
that writes for several tutors at once: it locks them in key order, so two
such transactions cannot deadlock on each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Insert, TextClause, insert, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from services.core.db.models import Outbox

# Advisory-lock class id (the first int4 of pg_advisory_xact_lock(int4, int4)):
# the outbox writer's own, distinct from the relay's SLOT_LOCK_CLASS ("RLY").
OUTBOX_LOCK_CLASS = 0x4F_55_54  # "OUT"

Row = Mapping[str, Any]


def lock_key(tutor_id: object) -> int:
    """The tutor's advisory-lock key: a stable signed int4 derived from its id."""
    digest = hashlib.blake2b(str(tutor_id).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _statements(
    tutor_ids: Sequence[object], rows: Sequence[Row]
) -> tuple[TextClause, dict[str, Any], Insert, list[dict[str, Any]]]:
    """Lock the tutors (in key order), then insert the rows (in list order)."""
    by_tutor = {str(t) for t in tutor_ids}
    for row in rows:
        if str(row["aggregate_id"]) not in by_tutor:
            raise ValueError(
                f"outbox row {row.get('event_type')} of tutor {row['aggregate_id']} "
                f"appended under the lock of {sorted(by_tutor)}"
            )
    lock, params = _lock_statement(by_tutor)
    return lock, params, insert(Outbox), [dict(r) for r in rows]


def _lock_statement(tutor_ids: Iterable[object]) -> tuple[TextClause, dict[str, Any]]:
    keys = sorted({lock_key(t) for t in tutor_ids})
    lock = text(
        "SELECT pg_advisory_xact_lock(:cls, k) "
        "FROM unnest(CAST(:keys AS int[])) WITH ORDINALITY AS u(k, n) ORDER BY n"
    )
    return lock, {"cls": OUTBOX_LOCK_CLASS, "keys": keys}


async def lock_tutors_async(conn: AsyncConnection, tutor_ids: Sequence[object]) -> None:
    """Take the tutors' outbox locks now (in key order), ahead of this transaction's append.

    For a decision that must agree with every other producer's commit order:
    once the locks are held, each statement sees whatever any other writer of
    these tutors committed before, and a writer that commits later draws its
    outbox ids after this transaction's. The append later takes them again
    (advisory locks stack), so the rule stays "rows first, then the tutor locks".
    """
    if tutor_ids:
        lock, params = _lock_statement(tutor_ids)
        await conn.execute(lock, params)


def append(conn: Connection | Session, tutor_id: object, rows: Sequence[Row]) -> None:
    """Append one tutor's outbox rows (`events.outbox_row(...)` values), in order.

    Takes the tutor's transaction lock first (see the module docstring); call
    it as the last write before commit. A `Session` is flushed first, so its
    pending changes take their row locks before the tutor lock.
    """
    if not rows:
        return
    lock, params, statement, values = _statements([tutor_id], rows)
    if isinstance(conn, Session):
        conn.flush()
    conn.execute(lock, params)
    conn.execute(statement, values)


async def append_async(conn: AsyncConnection, tutor_id: object, rows: Sequence[Row]) -> None:
    """`append` for an async connection (the migrator)."""
    if rows:
        await _append_async(conn, [tutor_id], rows)


async def append_group_async(conn: AsyncConnection, rows: Sequence[Row]) -> None:
    """Append rows of several tutors (a group commit), each tutor's rows in list order."""
    if rows:
        await _append_async(conn, [r["aggregate_id"] for r in rows], rows)


async def _append_async(
    conn: AsyncConnection, tutor_ids: Sequence[object], rows: Sequence[Row]
) -> None:
    lock, params, statement, values = _statements(tutor_ids, rows)
    await conn.execute(lock, params)
    await conn.execute(statement, values)
