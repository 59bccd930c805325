"""The plan: switches read and superseded, their sessions recorded as rows, retries queued."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.core import outbox, tracking
from services.core.db.models import MigrationState as M
from services.core.db.models import SwitchState as S
from services.core.events import TopicNames
from services.core.switching import sql_state, sql_states
from services.core.tracking import Delivery
from services.migrator.adapters.db.common import (
    ABSORB_ROLLBACK_SQL,
    ADOPT_SQL,
    ELIGIBLE_SQL,
    ROLLBACK_REQUESTED_SQL,
    UNSETTLED_SQL,
    complete_if_settled,
    settled_events,
    switch_ref,
)
from services.migrator.domain import SwitchRef

# A switch that takes up work again (a retry, an automatic retry, sessions the
# sweep found) owes its cleanup again: the sessions it moves now leave an old
# meeting behind, and a cleanup already done would never delete it (issue 17).
REOPEN_CLEANUP = "old_meetings_cleaned_at = NULL"


@dataclass(frozen=True, slots=True)
class PlanBatch:
    """One batch of the plan: rows inserted, rows seen, and where the next batch starts."""

    inserted: int
    seen: int
    cursor: tuple[datetime, str] | None


class PlanStore:
    """A switch's lifecycle up to its plan: which rows exist and which come back.

    The methods that end the handling of an event take its `Delivery` and
    write its tracking record (`core.tracking`) in their own transaction.
    """

    def __init__(self, engine: AsyncEngine, *, topics: TopicNames) -> None:
        self.engine = engine
        self.topics = topics

    async def handled(self, delivery: Delivery) -> bool:
        """Whether this event was handled already (its tracking record exists)."""
        async with self.engine.connect() as conn:
            return await tracking.handled_async(conn, delivery)

    async def track(self, delivery: Delivery) -> None:
        """Record an event whose handling changed nothing (its own transaction)."""
        async with self.engine.begin() as conn:
            await tracking.track_async(conn, delivery)

    async def switch(self, switch_id: str) -> SwitchRef | None:
        """The switch's progress row; None when the tutor never asked for such a switch.

        The first time the migrator meets a switch (its `provider.switched`, the
        catch-up, a rollback request) the row is made from the gateway's request,
        and set ROLLING_BACK if the tutor has asked to roll it back meanwhile.
        """
        async with self.engine.begin() as conn:
            await conn.execute(text(ADOPT_SQL), {"id": switch_id})
            await conn.execute(text(ABSORB_ROLLBACK_SQL), {"id": switch_id})
            row = (
                await conn.execute(
                    text(
                        "SELECT id, tutor_id, from_provider, to_provider, generation, state "
                        "FROM provider_switches WHERE id = :id"
                    ),
                    {"id": switch_id},
                )
            ).first()
        if row is None:
            return None
        return switch_ref(row)

    async def mark_superseded(
        self, *, tutor_id: str, below_generation: int, delivery: Delivery | None = None
    ) -> list[str]:
        """Mark the tutor's unfinished switches older than `below_generation` SUPERSEDED.

        Their rows not yet started are skipped; rows with a meeting already
        created are left to the executor, which skips them and deletes it.
        Each switch superseded gets its `switch.settled` in the same transaction.
        """
        # Locks in the executor's order — the rows first, then their switch —
        # or a row settling meanwhile deadlocks with this transaction.
        async with self.engine.begin() as conn:
            await tracking.track_async(conn, delivery)
            candidates = list(
                (
                    await conn.execute(
                        text(
                            "SELECT id FROM provider_switches p WHERE tutor_id = :t "
                            "AND generation < :g AND state IN "
                            f"{sql_states((S.PENDING, S.PLANNING, S.MIGRATING))} "
                            # one the tutor is rolling back ends ROLLED_BACK, not superseded
                            f"AND NOT {ROLLBACK_REQUESTED_SQL}"
                        ),
                        {"t": tutor_id, "g": below_generation},
                    )
                ).scalars()
            )
            if not candidates:
                return []
            await conn.execute(
                text(
                    f"UPDATE session_migrations SET state = {sql_state(M.SKIPPED)}, "
                    "last_error = 'superseded', updated_at = now() "
                    f"WHERE switch_id = ANY(:ids) AND state = {sql_state(M.PENDING)}"
                ),
                {"ids": candidates},
            )
            ids = (
                (
                    await conn.execute(
                        text(
                            f"UPDATE provider_switches SET state = {sql_state(S.SUPERSEDED)}, "
                            "completed_at = now() WHERE id = ANY(:ids) "
                            f"AND state IN {sql_states((S.PENDING, S.PLANNING, S.MIGRATING))} "
                            "RETURNING id"
                        ),
                        {"ids": candidates},
                    )
                )
                .scalars()
                .all()
            )
            superseded = [str(i) for i in ids]
            # the last write (core.outbox): the switches' settlement
            await outbox.append_async(
                conn, tutor_id, await settled_events(conn, superseded, topics=self.topics)
            )
        return superseded

    async def start_planning(self, switch_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    f"UPDATE provider_switches SET state = {sql_state(S.PLANNING)}, "
                    "started_at = coalesce(started_at, now()) "
                    f"WHERE id = :id AND state IN {sql_states((S.PENDING, S.PLANNING))}"
                ),
                {"id": switch_id},
            )

    async def plan_batch(
        self, switch: SwitchRef, *, cursor: tuple[datetime, str] | None, limit: int
    ) -> PlanBatch:
        """Record the next `limit` eligible sessions (soonest first) as PENDING rows, idempotently.

        Sessions already planned in this switch are left alone (ON CONFLICT DO
        NOTHING); the switch's total grows by the rows actually inserted, in
        the same transaction.
        """
        after = "AND (s.scheduled_start_at, s.id) > (:c_at, :c_id)" if cursor else ""
        sql = f"""
            WITH batch AS (
                SELECT s.id, s.scheduled_start_at, s.provider, s.meeting_external_id, s.join_url
                FROM sessions s
                WHERE s.tutor_id = :tutor AND s.status IN {ELIGIBLE_SQL}
                  AND s.scheduled_start_at >= now()
                  AND s.provider IS DISTINCT FROM :to_provider {after}
                ORDER BY s.scheduled_start_at, s.id
                LIMIT :limit
            ), inserted AS (
                INSERT INTO session_migrations (switch_id, session_id, tutor_id,
                    scheduled_start_at, from_provider, to_provider,
                    previous_meeting_external_id, previous_join_url)
                SELECT :switch, b.id, :tutor, b.scheduled_start_at, b.provider, :to_provider,
                       b.meeting_external_id, b.join_url
                FROM batch b
                ON CONFLICT (switch_id, session_id) DO NOTHING
                RETURNING 1
            ), counted AS (
                UPDATE provider_switches
                SET sessions_total = sessions_total + (SELECT count(*) FROM inserted)
                WHERE id = :switch AND (SELECT count(*) FROM inserted) > 0
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM inserted) AS inserted,
                   (SELECT count(*) FROM batch) AS seen,
                   last.scheduled_start_at AS last_at, last.id AS last_id,
                   (SELECT count(*) FROM counted) AS counted
            FROM (SELECT 1) one
            LEFT JOIN LATERAL (
                SELECT scheduled_start_at, id FROM batch
                ORDER BY scheduled_start_at DESC, id DESC LIMIT 1
            ) last ON true
        """
        params: dict[str, Any] = {
            "tutor": switch.tutor_id,
            "to_provider": switch.to_provider,
            "switch": switch.id,
            "limit": limit,
        }
        if cursor:
            params |= {"c_at": cursor[0], "c_id": cursor[1]}
        async with self.engine.begin() as conn:
            row = (await conn.execute(text(sql), params)).one()
        next_cursor = (row.last_at, str(row.last_id)) if row.last_id is not None else None
        return PlanBatch(inserted=row.inserted, seen=row.seen, cursor=next_cursor)

    async def finish_planning(self, switch_id: str, *, delivery: Delivery | None = None) -> None:
        """The plan is complete: let the switch complete (at once when nothing is left).

        The last transaction of handling `provider.switched`: its tracking
        record is written here, so a crash mid-plan leaves none and the
        redelivery plans again (each batch is idempotent).
        """
        async with self.engine.begin() as conn:
            await tracking.track_async(conn, delivery)
            await conn.execute(
                text(
                    f"UPDATE provider_switches SET state = {sql_state(S.MIGRATING)}, "
                    f"{REOPEN_CLEANUP} "
                    f"WHERE id = :id AND state IN ({sql_state(S.PLANNING)}, "
                    f"{sql_state(S.COMPLETED)}, "
                    f"{sql_state(S.COMPLETED_WITH_FAILURES)}) AND EXISTS (SELECT 1 FROM "
                    "session_migrations "
                    f"WHERE switch_id = :id AND state IN {UNSETTLED_SQL})"
                ),
                {"id": switch_id},
            )
            settled = await complete_if_settled(
                conn, switch_id, topics=self.topics, from_states=(S.PLANNING, S.MIGRATING)
            )
            await outbox.append_group_async(conn, settled)  # the last write (core.outbox)

    async def unhandled_switches(
        self, *, older_than: timedelta, window: timedelta, limit: int = 100
    ) -> list[SwitchRef]:
        """The tutor's switch requests still unhandled `older_than` after they were made.

        Handling `provider.switched` makes the switch's progress row and plans
        it at once: a request with no row (or one still PENDING) that long is
        one whose event is lost or stuck, and the catch-up handles it instead.
        """
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT r.id, r.tutor_id, r.from_provider, r.to_provider, r.generation, "
                        f"{sql_state(S.PENDING)} AS state FROM switch_requests r "
                        "LEFT JOIN provider_switches p ON p.id = r.id "
                        f"WHERE (p.id IS NULL OR p.state = {sql_state(S.PENDING)}) "
                        "AND r.requested_at < now() - :age "
                        # only recent requests (an index range, not the whole history)
                        "AND r.requested_at > now() - :window "
                        "ORDER BY r.requested_at LIMIT :n"
                    ),
                    {"age": older_than, "window": window, "n": limit},
                )
            ).all()
        return [switch_ref(r) for r in rows]

    async def sweepable_switches(self, *, window: timedelta) -> list[SwitchRef]:
        """Each tutor's current switch from the last `window`: the sweep's work list."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT p.id, p.tutor_id, p.from_provider, p.to_provider, p.generation, "
                        "p.state FROM provider_switches p JOIN tutor_video_provider_connections c "
                        "ON c.tutor_id = p.tutor_id AND c.generation = p.generation "
                        "AND c.provider = p.to_provider WHERE p.created_at > now() - :w "
                        f"AND p.state IN ({sql_state(S.PLANNING)}, {sql_state(S.MIGRATING)}, "
                        f"{sql_state(S.COMPLETED)}, "
                        f"{sql_state(S.COMPLETED_WITH_FAILURES)})"
                    ),
                    {"w": window},
                )
            ).all()
        return [switch_ref(r) for r in rows]

    async def auto_retry(self, *, max_retries: int, after: timedelta, limit: int = 500) -> int:
        """Queue retryable failures again by themselves: the n-th after `after` x 2^(n-1).

        Only rows of a switch that is still the tutor's current one, sessions
        still in the future, and not "reconnect required" (only the tutor can
        fix that: reconnecting starts a new switch, which plans them again).
        """
        if max_retries <= 0:
            return 0
        sql = f"""
            WITH due AS (
                SELECT m.id FROM session_migrations m
                JOIN provider_switches p ON p.id = m.switch_id
                JOIN tutor_video_provider_connections c ON c.tutor_id = p.tutor_id
                  AND c.generation = p.generation AND c.provider = p.to_provider
                WHERE m.state = {sql_state(M.FAILED)} AND m.retryable AND m.kind <> 'rollback'
                  AND m.auto_retries < :max
                  AND coalesce(m.last_error, '') NOT LIKE 'reconnect_required%'
                  AND m.updated_at <= now() - :after * power(2, m.auto_retries)
                  AND m.scheduled_start_at > now()
                  AND p.state IN {sql_states((S.MIGRATING, S.COMPLETED, S.COMPLETED_WITH_FAILURES))}
                ORDER BY m.scheduled_start_at
                LIMIT :limit
                FOR UPDATE OF m SKIP LOCKED
            ), queued AS (
                UPDATE session_migrations m SET state = {sql_state(M.PENDING)}, kind = 'retry',
                    attempts = 0, next_attempt_at = now(), retryable = NULL,
                    auto_retries = m.auto_retries + 1, updated_at = now()
                FROM due WHERE m.id = due.id
                RETURNING m.switch_id
            ), counts AS (
                SELECT switch_id, count(*) AS n FROM queued GROUP BY switch_id
            )
            UPDATE provider_switches p SET state = {sql_state(S.MIGRATING)}, completed_at = NULL,
                {REOPEN_CLEANUP},
                sessions_failed = greatest(p.sessions_failed - counts.n, 0)
            FROM counts WHERE p.id = counts.switch_id
            RETURNING counts.n
        """
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(text(sql), {"max": max_retries, "after": after, "limit": limit})
            ).scalars()
            return int(sum(rows))

    async def request_retry(
        self, *, switch_id: str, session_ids: Sequence[str], delivery: Delivery | None = None
    ) -> int:
        """Put the switch's failed rows (all, or those named) back in the queue as retries.

        With the request's tracking record in the same transaction: a
        redelivered request finds it and retries nothing a second time.
        """
        only = "AND session_id = ANY(CAST(:sessions AS uuid[]))" if session_ids else ""
        async with self.engine.begin() as conn:
            await tracking.track_async(conn, delivery)
            switch = (
                await conn.execute(
                    text(
                        "SELECT p.state FROM provider_switches p "
                        "JOIN tutor_video_provider_connections c ON c.tutor_id = p.tutor_id "
                        "AND c.generation = p.generation AND c.provider = p.to_provider "
                        "WHERE p.id = :id FOR UPDATE OF p"
                    ),
                    {"id": switch_id},
                )
            ).first()
            if switch is None or switch.state not in (
                S.MIGRATING,
                S.COMPLETED,
                S.COMPLETED_WITH_FAILURES,
            ):
                return 0
            count = (
                await conn.execute(
                    text(
                        f"UPDATE session_migrations SET state = {sql_state(M.PENDING)}, kind = "
                        "'retry', "
                        "attempts = 0, next_attempt_at = now(), retryable = NULL, "
                        "updated_at = now() WHERE switch_id = :id AND state = "
                        f"{sql_state(M.FAILED)} {only}"
                    ),
                    {"id": switch_id, "sessions": list(session_ids)},
                )
            ).rowcount
            if count:
                await conn.execute(
                    text(
                        f"UPDATE provider_switches SET state = {sql_state(S.MIGRATING)}, "
                        f"completed_at = NULL, {REOPEN_CLEANUP}, "
                        "sessions_failed = sessions_failed - :n WHERE id = :id"
                    ),
                    {"id": switch_id, "n": count},
                )
        return int(count)
