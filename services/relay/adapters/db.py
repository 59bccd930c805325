"""The outbox table, seen from the relay (psycopg 3, one connection).

One autocommit connection does everything: it LISTENs, it holds the slot
leases (session advisory locks), and it runs each batch in an explicit
transaction. Holding the leases on the connection that claims the rows means
a relay that loses PostgreSQL loses its leases and its row locks together.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg

from services.core.db.engine import libpq_conninfo
from services.core.db.errors import RetryableConflict, translate
from services.relay.domain import SLOT_LOCK_CLASS, OutboxRow
from services.relay.errors import StoreUnavailable

NOTIFY_CHANNEL = "relink_outbox"

# Unpublished rows, not rows past a cursor: a row whose transaction commits
# after a later id's is still unpublished, so the next claim picks it up.
# Attributes are read as text and the payload as its JSON text, sparing the
# relay a JSON parse and re-serialisation per row.
_CLAIM = """
SELECT id, event_id, aggregate_id, event_type, topic, payload::text,
       headers->>'source', headers->>'subject', headers->>'time',
       headers->>'specversion', headers->>'dataschema',
       headers->>'traceparent', headers->>'tracestate'
FROM outbox
WHERE published_at IS NULL {slot_filter}
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""
_SLOT_FILTER = "AND (hashtext(aggregate_id) & 2147483647) %% %(slot_count)s = ANY(%(slots)s)"


class OutboxStore:
    """Claim, mark and clean outbox rows; wait for inserts; lease tutor slots."""

    def __init__(self, database_url: str, *, connect_timeout_s: float = 5.0) -> None:
        self._conninfo = libpq_conninfo(database_url)
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self.held_slots: set[int] = set()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def connect(self) -> None:
        """Open the connection and LISTEN; a no-op while connected."""
        if self.connected:
            return
        self.held_slots = set()
        try:
            self._conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=max(1, int(self._connect_timeout_s)),
                application_name="relink-relay",
            )
            self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except psycopg.Error as exc:
            self.close()
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self.held_slots = set()
        if conn is not None:
            with suppress(psycopg.Error):
                conn.close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            raise StoreUnavailable("not connected")
        return self._conn

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            translated = translate(exc)
            if not isinstance(translated, RetryableConflict):
                self.close()  # the next step reconnects
            # The loop retries a conflict (deadlock) like a lost connection.
            raise StoreUnavailable(f"PostgreSQL: {translated or exc}") from exc

    def lease_slots(self, wanted: list[int]) -> set[int]:
        """Try to lock every wanted slot not held yet; return the slots held."""
        missing = [slot for slot in wanted if slot not in self.held_slots]
        if missing:
            with self._translated():
                rows = (
                    self._connection()
                    .execute(
                        "SELECT s FROM unnest(%s::int[]) AS s WHERE pg_try_advisory_lock(%s, s)",
                        (missing, SLOT_LOCK_CLASS),
                    )
                    .fetchall()
                )
            self.held_slots |= {row[0] for row in rows}
        return set(self.held_slots)

    @contextmanager
    def batch(self) -> Iterator[OutboxBatch]:
        """One claim-publish-mark transaction; the row locks end with it."""
        with self._translated():
            conn = self._connection()
            with conn.transaction():
                yield OutboxBatch(conn)

    def wait_for_insert(self, timeout_s: float) -> bool:
        """Block until a NOTIFY from an outbox insert or the timeout; True if notified."""
        with self._translated():
            notified = False
            for _ in self._connection().notifies(timeout=timeout_s, stop_after=1):
                notified = True
            return notified

    def backlog(self) -> tuple[int, float]:
        """Unpublished rows and the age in seconds of the oldest one."""
        with self._translated():
            row = (
                self._connection()
                .execute(
                    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)"
                    " FROM outbox WHERE published_at IS NULL"
                )
                .fetchone()
            )
        assert row is not None
        return int(row[0]), float(row[1])

    def delete_published(self, *, older_than_s: float, chunk: int = 10_000) -> int:
        """Delete rows published longer ago than the retention, in chunks."""
        deleted = 0
        with self._translated():
            while True:
                cursor = self._connection().execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at"
                    " < now() - make_interval(secs => %s) LIMIT %s)",
                    (older_than_s, chunk),
                )
                deleted += cursor.rowcount
                if cursor.rowcount < chunk:
                    return deleted


class OutboxBatch:
    """The statements of one batch transaction."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def claim(self, *, limit: int, slots: set[int] | None, slot_count: int) -> list[OutboxRow]:
        """Lock and return up to `limit` unpublished rows in id order (None = all slots)."""
        sql = _CLAIM.format(slot_filter=_SLOT_FILTER if slots is not None else "")
        params: dict[str, Any] = {"limit": limit}
        if slots is not None:
            params |= {"slot_count": slot_count, "slots": sorted(slots)}
        rows = self._conn.execute(sql, params).fetchall()
        return [
            OutboxRow(
                id=r[0],
                event_id=r[1],
                aggregate_id=r[2],
                event_type=r[3],
                topic=r[4],
                payload=r[5].encode(),
                headers={
                    k: v
                    for k, v in zip(
                        (
                            "source",
                            "subject",
                            "time",
                            "specversion",
                            "dataschema",
                            # the CloudEvents distributed-tracing extension (core.tracing)
                            "traceparent",
                            "tracestate",
                        ),
                        r[6:],
                        strict=True,
                    )
                    if v is not None
                },
            )
            for r in rows
        ]

    def mark_published(self, ids: list[int]) -> None:
        if ids:
            self._conn.execute(
                "UPDATE outbox SET published_at = clock_timestamp(),"
                " publish_attempts = publish_attempts + 1, last_error = NULL"
                " WHERE id = ANY(%s)",
                (ids,),
            )

    def record_failure(self, ids: list[int], *, error: str) -> None:
        if ids:
            self._conn.execute(
                "UPDATE outbox SET publish_attempts = publish_attempts + 1, last_error = %s"
                " WHERE id = ANY(%s)",
                (error[:1000], ids),
            )
