"""PostgreSQL adapter of the rollback and of the cleanup after the grace period.

Each step is guarded by the state it moves a row or a switch out of, so a
re-run after a crash (or a redelivered request) finishes the job and never
repeats one: a session is restored in the transaction that marks its row
`ROLLED_BACK` and writes its `session.migrated` (kind `rollback`); a deleted
meeting is recorded on its row (`new_meeting_deleted_at`,
`previous_meeting_deleted_at`); the switch's final state and its event commit
together.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.core import outbox, tracking
from services.core.db.locks import LOCK_CONNECTION_SQL
from services.core.db.models import MigrationState as M
from services.core.db.models import SessionStatus
from services.core.db.models import SwitchState as S
from services.core.messages import SessionMigrated, SwitchRolledBack, message_row
from services.core.settings import CommonSettings
from services.core.switching import sql_state, sql_states
from services.core.tracking import Delivery
from services.migrator.adapters.db.common import (
    ELIGIBLE_SQL,
    SOURCE,
    UNSETTLED_SQL,
    settled_events,
    sql_list,
    switch_ref,
)
from services.migrator.adapters.db.plan import PlanStore
from services.migrator.domain import UNSETTLED_STATES, SwitchRef

# What a row that could not be restored says; the rolled-back event counts them.
NOT_RESTORED = "rollback: session no longer on this switch's meeting"
_NOT_RESTORED_SQL = NOT_RESTORED.replace("'", "''")  # as an SQL string literal
# Switches whose previous meetings the cleanup deletes once the grace period is over.
CLEANABLE_STATES = (S.COMPLETED, S.COMPLETED_WITH_FAILURES, S.SUPERSEDED)


@dataclass(frozen=True, slots=True)
class MeetingToDelete:
    """One meeting a row made (or replaced) that nobody uses any more."""

    row_id: int
    session_id: str
    meeting_external_id: str


@dataclass(frozen=True, slots=True)
class CancelledMeeting:
    """A meeting of a cancelled session, owed a deletion at `provider`.

    `row_id` None: the session's current meeting (cleared from the session once
    deleted); else the migration row that kept it as the session's previous one.
    """

    session_id: str
    tutor_id: str
    provider: str
    meeting_external_id: str
    row_id: int | None


@dataclass(frozen=True, slots=True)
class UnusedMeeting:
    """A meeting a row made at its new provider that no session uses: owed a deletion.

    `meeting_external_id` is None when the row's create may have reached the
    provider without its answer being recorded (a process killed mid-create,
    a row skipped while its create was in flight): it is looked up by the
    request (Zoom's agenda marker, Google's derived event id) first.
    """

    row_id: int
    tutor_id: str
    switch_id: str
    session_id: str
    provider: str
    meeting_external_id: str | None
    topic: str
    scheduled_start_at: datetime
    duration_minutes: int
    timezone: str


# -- which meetings relink owes a deletion (the cleanup rule, README step 9) ----
#
# A meeting a row made at its new provider is owed a deletion once no session
# uses it and nothing can use it again: its row ended without moving its
# session (SKIPPED, or FAILED in a switch a newer generation replaced) or was
# rolled back. A row that may have made one without recording it (claimed at
# least once, `attempts > 0`) counts too: the meeting is looked up. Until the
# session starts, after which nobody joins it by mistake and relink stops trying.
# `m` is the row, `p` its switch.
UNUSED_NEW_SQL = f"""
    m.new_meeting_deleted_at IS NULL AND m.scheduled_start_at > now()
    AND (m.new_meeting_external_id IS NOT NULL OR m.attempts > 0)
    AND (m.state IN {sql_states((M.SKIPPED, M.ROLLED_BACK))}
         OR (m.state = {sql_state(M.FAILED)} AND EXISTS (
             SELECT 1 FROM tutor_video_provider_connections c
             WHERE c.tutor_id = m.tutor_id AND c.generation > p.generation)))
    AND NOT EXISTS (
        SELECT 1 FROM sessions s WHERE s.id = m.session_id
          AND s.meeting_external_id = m.new_meeting_external_id)
    AND NOT EXISTS (
        SELECT 1 FROM session_migrations o
        JOIN provider_switches op ON op.id = o.switch_id
        WHERE o.session_id = m.session_id AND o.id <> m.id
          AND o.state = {sql_state(M.MIGRATED)} AND op.old_meetings_cleaned_at IS NULL
          AND o.previous_meeting_external_id = m.new_meeting_external_id)
"""
# The previous meeting of a migrated row, owed a deletion once its switch is
# settled past its grace period: unless a session is on it again, or a later,
# not yet cleaned switch keeps it for its own rollback.
OLD_OWED_SQL = f"""
    m.state = {sql_state(M.MIGRATED)}
    AND m.previous_meeting_external_id IS NOT NULL
    AND m.previous_meeting_deleted_at IS NULL
    AND NOT EXISTS (
        SELECT 1 FROM sessions s WHERE s.id = m.session_id
          AND s.provider = m.from_provider
          AND s.meeting_external_id = m.previous_meeting_external_id)
    AND NOT EXISTS (
        SELECT 1 FROM session_migrations o
        JOIN provider_switches op ON op.id = o.switch_id
        WHERE o.session_id = m.session_id AND o.switch_id <> m.switch_id
          AND o.state = {sql_state(M.MIGRATED)} AND op.old_meetings_cleaned_at IS NULL
          AND o.from_provider = m.from_provider
          AND o.previous_meeting_external_id = m.previous_meeting_external_id)
"""


# Only sessions relink's service API cancelled (`sessions.cancelled_at`, 0015):
# one cancelled any other way is never touched (DESIGN.md's invariant).
# A cancelled session's meetings are owed a deletion at once: no rollback ever
# restores a cancelled session (`restore_batch` moves only eligible ones), so
# nothing will use them again. Its current meeting (`s`, a session) -- the
# deletion clears it from the session -- and, for a session a switch moved, the
# previous meeting that switch kept for its rollback (`m`, its row: MIGRATED, or
# SKIPPED by a rollback that could not restore it). Until the session's start,
# as for every other deletion relink owes.
CANCELLED_CURRENT_SQL = f"""
    s.status = {sql_state(SessionStatus.CANCELLED)} AND s.cancelled_at IS NOT NULL
    AND s.provider IS NOT NULL AND s.meeting_external_id IS NOT NULL
    AND s.scheduled_start_at > now()
"""
CANCELLED_PREVIOUS_SQL = f"""
    (m.state = {sql_state(M.MIGRATED)}
     OR (m.state = {sql_state(M.SKIPPED)} AND m.last_error = '{_NOT_RESTORED_SQL}'))
    AND m.previous_meeting_external_id IS NOT NULL AND m.previous_meeting_deleted_at IS NULL
    AND m.scheduled_start_at > now()
    AND EXISTS (
        SELECT 1 FROM sessions cs WHERE cs.id = m.session_id
          AND cs.status = {sql_state(SessionStatus.CANCELLED)} AND cs.cancelled_at IS NOT NULL
          AND cs.meeting_external_id IS DISTINCT FROM m.previous_meeting_external_id)
"""


def owed_at_sql(tutor: str, provider: str) -> str:
    """EXISTS: the tutor is owed a meeting deletion at `provider` (whose tokens must stay kept).

    Either a meeting a row made there that nobody uses, or the previous
    meeting of a migrated row whose switch is not cleaned up yet, or one that
    will be: a failed row of the tutor's current switch may still move (the
    tutor's retry, an automatic one), and its session's meeting there is then
    owed a deletion that only these tokens can make. Also a row not settled
    yet whose create may have reached the provider: a superseded or rolled-back
    switch's row is skipped later (`settle_stranded`), and its meeting is then
    owed a deletion with these tokens (forgotten meanwhile, it stayed live).
    And the meetings of cancelled sessions there (current or kept for a rollback).
    """
    return f"""EXISTS (
        SELECT 1 FROM session_migrations m JOIN provider_switches p ON p.id = m.switch_id
        WHERE m.tutor_id = {tutor} AND (
            (m.to_provider = {provider} AND {UNUSED_NEW_SQL})
            OR (m.from_provider = {provider} AND p.old_meetings_cleaned_at IS NULL
                AND m.scheduled_start_at > now() AND {OLD_OWED_SQL})
            OR (m.to_provider = {provider} AND m.state IN {UNSETTLED_SQL}
                AND (m.new_meeting_external_id IS NOT NULL OR m.attempts > 0)
                AND m.scheduled_start_at > now())
            OR (m.from_provider = {provider} AND m.state = {sql_state(M.FAILED)}
                AND m.previous_meeting_external_id IS NOT NULL
                AND m.scheduled_start_at > now()
                AND EXISTS (SELECT 1 FROM tutor_video_provider_connections cc
                            WHERE cc.tutor_id = m.tutor_id AND cc.generation = p.generation))
            OR (m.from_provider = {provider} AND {CANCELLED_PREVIOUS_SQL})))
        OR EXISTS (
        SELECT 1 FROM sessions s WHERE s.tutor_id = {tutor} AND s.provider = {provider}
          AND {CANCELLED_CURRENT_SQL})"""


@dataclass(frozen=True, slots=True)
class RollbackOutcome:
    """What a finished rollback reports in `switch.rolled_back`."""

    restored_provider: str
    sessions_restored: int
    sessions_failed: int


def event_id_for(*parts: str) -> uuid.UUID:
    """A stable event id: the outbox's unique event id refuses a second copy of the same event."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "relink:migrator:" + ":".join(parts))


class RollbackStore:
    """The rollback's and the cleanup's transactions; reads switches through the plan part."""

    def __init__(self, engine: AsyncEngine, *, topics: CommonSettings, plans: PlanStore) -> None:
        self.engine = engine
        self.topics = topics
        self.plans = plans
        self.switch = plans.switch

    # -- rollback ---------------------------------------------------------------

    async def rolling_back(self) -> list[str]:
        """Switches whose rollback was requested and is not finished (resumed by the timer).

        The tutor's request counts, not only the progress row: a rollback whose
        `switch.rollback_requested` was lost or is stuck is found here too.
        """
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    f"SELECT id FROM provider_switches WHERE state = {sql_state(S.ROLLING_BACK)} "
                    "UNION SELECT r.id FROM switch_requests r "
                    "LEFT JOIN provider_switches p ON p.id = r.id "
                    "WHERE r.rollback_requested_at IS NOT NULL "
                    f"AND (p.id IS NULL OR p.state <> {sql_state(S.ROLLED_BACK)})"
                )
            )
            return [str(r) for r in rows.scalars()]

    async def cancel_unsettled(self, switch_id: str) -> int:
        """Skip the rows not yet moved; their meetings (if any) are deleted with the others."""
        async with self.engine.begin() as conn:
            count = (
                await conn.execute(
                    text(
                        f"UPDATE session_migrations SET state = {sql_state(M.SKIPPED)}, "
                        "last_error = 'rolled back before it moved', updated_at = now() "
                        f"WHERE switch_id = :id AND state IN {UNSETTLED_SQL}"
                    ),
                    {"id": switch_id},
                )
            ).rowcount
            if count:
                await conn.execute(
                    text(
                        "UPDATE provider_switches SET sessions_total = "
                        "greatest(sessions_total - :n, 0) WHERE id = :id"
                    ),
                    {"id": switch_id, "n": count},
                )
        return int(count)

    async def restore_batch(self, switch: SwitchRef, *, limit: int) -> tuple[int, int]:
        """Put up to `limit` migrated sessions back on their previous meeting; (restored, seen).

        One transaction: each session goes back only if it is still on this
        switch's new meeting and still eligible; its row becomes `ROLLED_BACK`
        and its `session.migrated` (kind `rollback`) is written; a row whose
        session moved on is `SKIPPED`. Plain FOR UPDATE (no SKIP LOCKED): a
        concurrent run waits, then finds the rows no longer `MIGRATED`.
        """
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT id FROM session_migrations WHERE switch_id = :id "
                        f"AND state = {sql_state(M.MIGRATED)} ORDER BY id LIMIT :n FOR UPDATE"
                    ),
                    {"id": switch.id, "n": limit},
                )
            ).scalars()
            ids = [int(i) for i in rows]
            if not ids:
                return 0, 0
            restored = (
                await conn.execute(
                    text(
                        "UPDATE sessions s SET provider = m.from_provider, "
                        "meeting_external_id = m.previous_meeting_external_id, "
                        "join_url = m.previous_join_url, version = s.version + 1, "
                        "updated_at = :now FROM session_migrations m "
                        f"WHERE m.id = ANY(:ids) AND m.state = {sql_state(M.MIGRATED)} AND s.id = "
                        "m.session_id "
                        "AND s.provider = m.to_provider "
                        "AND s.meeting_external_id = m.new_meeting_external_id "
                        f"AND s.status IN {ELIGIBLE_SQL} AND s.scheduled_start_at >= :now "
                        "RETURNING m.id, m.session_id, m.tutor_id, s.student_id, s.booking_id, "
                        "s.scheduled_start_at, m.from_provider, m.to_provider, "
                        "m.previous_meeting_external_id, m.previous_join_url, "
                        "m.new_meeting_external_id"
                    ),
                    {"ids": ids, "now": now},
                )
            ).all()
            restored_ids = [r.id for r in restored]
            await conn.execute(
                text(
                    "UPDATE session_migrations SET state = CASE WHEN id = ANY(:restored) "
                    f"THEN {sql_state(M.ROLLED_BACK)} ELSE {sql_state(M.SKIPPED)} END, last_error "
                    "= CASE WHEN "
                    "id = ANY(:restored) THEN NULL ELSE :why END, updated_at = :now "
                    f"WHERE id = ANY(:ids) AND state = {sql_state(M.MIGRATED)}"
                ),
                {"ids": ids, "restored": restored_ids, "why": NOT_RESTORED, "now": now},
            )
            notices = [
                self._restored_event(switch, r, now=now)
                for r in restored
                # A session that had no meeting before goes back to none; there
                # is no link to tell its student about.
                if r.previous_meeting_external_id and r.previous_join_url
            ]
            if notices:
                await outbox.append_async(conn, switch.tutor_id, notices)
        return len(restored_ids), len(ids)

    def _restored_event(self, switch: SwitchRef, row: Any, *, now: datetime) -> dict[str, Any]:
        return message_row(
            SessionMigrated(
                switch_id=switch.id,
                tutor_id=str(row.tutor_id),
                session_id=str(row.session_id),
                student_id=str(row.student_id),
                booking_id=str(row.booking_id) if row.booking_id else None,
                scheduled_start_at=row.scheduled_start_at,
                kind="rollback",
                provider=row.from_provider,
                meeting_external_id=row.previous_meeting_external_id,
                join_url=row.previous_join_url,
                previous_provider=row.to_provider,
                previous_meeting_external_id=row.new_meeting_external_id,
                migrated_at=now,
            ),
            tutor_id=str(row.tutor_id),
            source=SOURCE,
            topics=self.topics,
            event_id=event_id_for("rollback", switch.id, str(row.session_id)),
        )

    async def new_meetings_to_delete(
        self, switch_id: str, *, after_id: int, limit: int
    ) -> list[MeetingToDelete]:
        """Meetings this switch made that no session uses after the rollback, not yet deleted."""
        sql = f"""
            SELECT m.id, m.session_id, m.new_meeting_external_id AS meeting
            FROM session_migrations m
            WHERE m.switch_id = :id AND m.id > :after
              AND m.state IN {sql_states((M.ROLLED_BACK, M.SKIPPED, M.FAILED))}
              AND m.new_meeting_external_id IS NOT NULL AND m.new_meeting_deleted_at IS NULL
              AND NOT EXISTS (
                  SELECT 1 FROM sessions s WHERE s.id = m.session_id
                    AND s.provider = m.to_provider
                    AND s.meeting_external_id = m.new_meeting_external_id)
            ORDER BY m.id LIMIT :n
        """
        return await self._meetings(sql, {"id": switch_id, "after": after_id, "n": limit})

    async def mark_new_meetings_deleted(self, row_ids: Sequence[int]) -> None:
        await self._mark(row_ids, column="new_meeting_deleted_at")

    async def finish_rollback(
        self, switch: SwitchRef, *, delivery: Delivery | None = None
    ) -> RollbackOutcome | None:
        """ROLLED_BACK + `switch.rolled_back` and `switch.settled` in one transaction (with the
        request's tracking record when given); None if not (yet) due.

        Not due while a row is still `MIGRATED` (another run is restoring it).
        The new provider's tokens, kept by the gateway in `previous_*` so the
        new meetings could be deleted, are forgotten in the same transaction.

        Locks in `services.core.db.locks.LOCK_ORDER`: the connection row first,
        then the switch, as the gateway's rollback request does; the other order
        deadlocked with a second rollback request.

        Nothing else happens: sessions this switch never moved (e.g. ones a
        superseded earlier switch never reached) keep the live meeting they
        have. A rollback never creates a meeting nor a switch.
        """
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            await conn.execute(text(LOCK_CONNECTION_SQL), {"tutor_id": switch.tutor_id})
            done = (
                await conn.execute(
                    text(
                        f"UPDATE provider_switches SET state = {sql_state(S.ROLLED_BACK)}, "
                        "rolled_back_at = :now, "
                        "completed_at = coalesce(completed_at, :now) "
                        f"WHERE id = :id AND state = {sql_state(S.ROLLING_BACK)} AND NOT EXISTS ("
                        "SELECT 1 FROM session_migrations WHERE switch_id = :id "
                        f"AND state IN {sql_list((M.MIGRATED, *UNSETTLED_STATES))}) "
                        "RETURNING id"
                    ),
                    {"id": switch.id, "now": now},
                )
            ).first()
            if done is None:
                return None
            await tracking.track_async(conn, delivery)
            outcome = await self._rollback_outcome(conn, switch)
            await self._forget_previous(
                conn,
                tutor_id=switch.tutor_id,
                generation=switch.generation + 1,
                provider=switch.to_provider,
            )
            await outbox.append_async(
                conn,
                switch.tutor_id,
                [
                    message_row(
                        SwitchRolledBack(
                            switch_id=switch.id,
                            tutor_id=switch.tutor_id,
                            restored_provider=outcome.restored_provider,
                            sessions_restored=outcome.sessions_restored,
                            sessions_failed=outcome.sessions_failed,
                            rolled_back_at=now,
                        ),
                        tutor_id=switch.tutor_id,
                        source=SOURCE,
                        topics=self.topics,
                        event_id=event_id_for("rolled_back", switch.id),
                    ),
                    *await settled_events(conn, [switch.id], topics=self.topics),
                ],
            )
        return outcome

    async def _rollback_outcome(self, conn: AsyncConnection, switch: SwitchRef) -> RollbackOutcome:
        row = (
            await conn.execute(
                text(
                    f"SELECT count(*) FILTER (WHERE m.state = {sql_state(M.ROLLED_BACK)}) AS "
                    "restored, "
                    # Not restored and still a future scheduled session: it stays
                    # on a meeting at the provider the tutor just left.
                    f"count(*) FILTER (WHERE m.state = {sql_state(M.SKIPPED)} AND m.last_error = "
                    ":why "
                    f"AND s.status IN {ELIGIBLE_SQL} AND s.scheduled_start_at >= now()) AS failed "
                    "FROM session_migrations m JOIN sessions s ON s.id = m.session_id "
                    "WHERE m.switch_id = :id"
                ),
                {"id": switch.id, "why": NOT_RESTORED},
            )
        ).one()
        return RollbackOutcome(
            restored_provider=switch.from_provider,
            sessions_restored=int(row.restored),
            sessions_failed=int(row.failed),
        )

    # -- cleanup after the grace period ----------------------------------------

    async def switches_to_clean(self, *, limit: int) -> list[SwitchRef]:
        """Settled switches past their rollback deadline whose old meetings are still kept."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT id, tutor_id, from_provider, to_provider, generation, state "
                        "FROM provider_switches WHERE state = ANY(:states) "
                        "AND rollback_deadline < now() AND old_meetings_cleaned_at IS NULL "
                        "ORDER BY rollback_deadline LIMIT :n"
                    ),
                    {"states": list(CLEANABLE_STATES), "n": limit},
                )
            ).all()
        return [switch_ref(r) for r in rows]

    async def old_meetings_to_delete(
        self, switch: SwitchRef, *, after_id: int, limit: int
    ) -> list[MeetingToDelete]:
        """The previous meetings of the switch's migrated sessions that nothing uses any more.

        Never one a session is on (a newer switch rolled back onto it), nor one
        a later, not yet cleaned switch still keeps for its own rollback.
        """
        sql = f"""
            SELECT m.id, m.session_id, m.previous_meeting_external_id AS meeting
            FROM session_migrations m
            WHERE m.switch_id = :id AND m.id > :after AND m.from_provider = :from_p
              AND {OLD_OWED_SQL}
            ORDER BY m.id LIMIT :n
        """
        return await self._meetings(
            sql, {"id": switch.id, "after": after_id, "n": limit, "from_p": switch.from_provider}
        )

    async def mark_old_meetings_deleted(self, row_ids: Sequence[int]) -> None:
        await self._mark(row_ids, column="previous_meeting_deleted_at")

    async def finish_cleanup(self, switch: SwitchRef, *, give_up: bool = False) -> bool:
        """Record the cleanup and forget the old tokens, if no newer switch replaced them.

        Only once none of its old meetings is still owed a deletion (one the
        provider refused to delete stays for the next run), unless `give_up`:
        no tokens are left to delete them with.
        """
        async with self.engine.begin() as conn:
            done = (
                await conn.execute(
                    text(
                        "UPDATE provider_switches SET old_meetings_cleaned_at = now() "
                        "WHERE id = :id AND old_meetings_cleaned_at IS NULL "
                        "AND (CAST(:give_up AS boolean) OR NOT EXISTS (SELECT 1 FROM "
                        "session_migrations m WHERE m.switch_id = :id "
                        f"AND m.scheduled_start_at > now() AND {OLD_OWED_SQL})) RETURNING id"
                    ),
                    {"id": switch.id, "give_up": give_up},
                )
            ).first()
            if done is None:
                return False
            await self._forget_previous(
                conn,
                tutor_id=switch.tutor_id,
                generation=switch.generation,
                provider=switch.from_provider,
            )
        return True

    # -- meetings nobody uses (any switch, any time) ---------------------------

    async def settle_stranded(self) -> int:
        """Skip the unsettled rows of superseded switches whose lease is over.

        The executor claims only tutors with a switch under way: after a newer
        switch was rolled back, a row left `MEETING_CREATED` (or claimed and
        killed) was never settled, and its meeting stayed live.
        """
        async with self.engine.begin() as conn:
            count = (
                await conn.execute(
                    text(
                        f"UPDATE session_migrations m SET state = {sql_state(M.SKIPPED)}, "
                        "last_error = 'superseded', updated_at = now() "
                        "FROM provider_switches p WHERE p.id = m.switch_id "
                        f"AND p.state IN {sql_states((S.SUPERSEDED, S.ROLLED_BACK))} "
                        f"AND m.state IN {UNSETTLED_SQL} AND m.next_attempt_at < now()"
                    )
                )
            ).rowcount
        return int(count)

    async def unused_meetings(self, *, after_id: int, limit: int) -> list[UnusedMeeting]:
        """Meetings rows made that no session uses (or may have made), owed a deletion.

        A row whose create may still be in flight (its lease not over) waits.
        """
        sql = f"""
            SELECT m.id, m.tutor_id, m.switch_id, m.session_id, m.to_provider,
                   m.new_meeting_external_id, coalesce(b.topic, '') AS topic,
                   m.scheduled_start_at, ss.duration_minutes,
                   coalesce(b.timezone, 'UTC') AS timezone
            FROM session_migrations m
            JOIN provider_switches p ON p.id = m.switch_id
            JOIN sessions ss ON ss.id = m.session_id
            LEFT JOIN bookings b ON b.id = ss.booking_id
            WHERE m.id > :after AND {UNUSED_NEW_SQL}
              AND (m.new_meeting_external_id IS NOT NULL OR m.next_attempt_at < now())
            ORDER BY m.id LIMIT :n
        """
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(sql), {"after": after_id, "n": limit})).all()
        return [
            UnusedMeeting(
                row_id=r.id,
                tutor_id=str(r.tutor_id),
                switch_id=str(r.switch_id),
                session_id=str(r.session_id),
                provider=r.to_provider,
                meeting_external_id=r.new_meeting_external_id,
                topic=r.topic,
                scheduled_start_at=r.scheduled_start_at,
                duration_minutes=r.duration_minutes,
                timezone=r.timezone,
            )
            for r in rows
        ]

    async def cancelled_meetings(
        self, *, session_id: str | None = None, limit: int
    ) -> list[CancelledMeeting]:
        """Meetings of cancelled sessions still owed a deletion (of one session, or any)."""
        only_s = "AND s.id = CAST(:sid AS uuid)" if session_id else ""
        only_m = "AND m.session_id = CAST(:sid AS uuid)" if session_id else ""
        sql = f"""
            (SELECT s.id AS session_id, s.tutor_id, s.provider,
                    s.meeting_external_id AS meeting, NULL::bigint AS row_id
             FROM sessions s WHERE {CANCELLED_CURRENT_SQL} {only_s}
             ORDER BY s.scheduled_start_at LIMIT :n)
            UNION ALL
            (SELECT m.session_id, m.tutor_id, m.from_provider,
                    m.previous_meeting_external_id, m.id
             FROM session_migrations m WHERE {CANCELLED_PREVIOUS_SQL} {only_m}
             ORDER BY m.id LIMIT :n)
        """
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(sql), {"sid": session_id, "n": limit})).all()
        return [
            CancelledMeeting(
                session_id=str(r.session_id),
                tutor_id=str(r.tutor_id),
                provider=r.provider,
                meeting_external_id=r.meeting,
                row_id=r.row_id,
            )
            for r in rows
        ]

    async def cancelled_meeting_deleted(self, meeting: CancelledMeeting) -> None:
        """Record a cancelled session's meeting as deleted (the session no longer names it)."""
        async with self.engine.begin() as conn:
            if meeting.row_id is not None:
                await conn.execute(
                    text(
                        "UPDATE session_migrations SET previous_meeting_deleted_at = now(), "
                        "updated_at = now() WHERE id = :id"
                    ),
                    {"id": meeting.row_id},
                )
                return
            # Guarded: only while the session is still cancelled and on that meeting.
            await conn.execute(
                text(
                    "UPDATE sessions SET meeting_external_id = NULL, join_url = NULL, "
                    "version = version + 1, updated_at = now() "
                    f"WHERE id = :id AND status = {sql_state(SessionStatus.CANCELLED)} "
                    "AND provider = :p AND meeting_external_id = :m"
                ),
                {
                    "id": meeting.session_id,
                    "p": meeting.provider,
                    "m": meeting.meeting_external_id,
                },
            )

    async def record_found(self, row_id: int, meeting_external_id: str) -> bool:
        """Record a meeting found by lookup on its row before deleting it; False: in use."""
        return await record_unused_meeting(self.engine, row_id, meeting_external_id) != "in_use"

    async def release_tokens(self) -> int:
        """Forget kept tokens no switch needs any more, once nothing is owed at their provider.

        A rollback or a cleanup keeps them while a meeting relink owes a
        deletion there; this lets them go once those are done. Per tutor,
        guarded by the generation read (a new switch meanwhile keeps them).

        The switch that made the current generation is read from the tutor's
        request (the gateway's `switch_requests`), not only from its progress
        row: the migrator makes that row when it first reads the switch, and
        until then the sessions it will move are still on meetings at the
        kept provider, owed a deletion only later. Forgotten in that window,
        those meetings stayed live for ever (found by `relink soak`: a booking's
        Meet events next to the Zoom meetings that replaced them). So is a
        rollback the tutor asked for that has not ended yet.
        """
        sql = f"""
            SELECT c.tutor_id, c.generation, c.previous_provider
            FROM tutor_video_provider_connections c
            WHERE c.previous_provider IS NOT NULL
              AND NOT EXISTS (
                  SELECT 1 FROM switch_requests r
                  LEFT JOIN provider_switches p ON p.id = r.id
                  WHERE r.tutor_id = c.tutor_id AND (
                    (r.generation = c.generation AND (p.id IS NULL OR (
                        p.old_meetings_cleaned_at IS NULL
                        AND p.state NOT IN {sql_states((S.SUPERSEDED, S.ROLLED_BACK))})))
                    OR (r.rollback_requested_at IS NOT NULL AND (
                        p.id IS NULL OR p.state <> {sql_state(S.ROLLED_BACK)}))))
              AND NOT {owed_at_sql("c.tutor_id", "c.previous_provider")}
        """
        released = 0
        async with self.engine.begin() as conn:
            for row in (await conn.execute(text(sql))).all():
                released += await self._forget_previous(
                    conn,
                    tutor_id=str(row.tutor_id),
                    generation=row.generation,
                    provider=row.previous_provider,
                )
        return released

    # -- pieces ---------------------------------------------------------------

    async def _forget_previous(
        self, conn: AsyncConnection, *, tutor_id: str, generation: int, provider: str
    ) -> int:
        # Only while the kept connection is still the one this switch left
        # behind (a newer switch or rollback put another one there), and no
        # meeting relink made is still owed a deletion at that provider: those
        # tokens are the only way to delete it.
        return int(
            (
                await conn.execute(
                    text(
                        "UPDATE tutor_video_provider_connections SET previous_provider = NULL, "
                        "previous_access_token_encrypted = NULL, "
                        "previous_refresh_token_encrypted = NULL, "
                        "previous_token_expires_at = NULL, updated_at = now() "
                        "WHERE tutor_id = :t AND generation = :g AND previous_provider = :p "
                        f"AND NOT {owed_at_sql('CAST(:t AS uuid)', 'CAST(:p AS text)')}"
                    ),
                    {"t": tutor_id, "g": generation, "p": provider},
                )
            ).rowcount
        )

    async def _meetings(self, sql: str, params: dict[str, Any]) -> list[MeetingToDelete]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(sql), params)).all()
        return [
            MeetingToDelete(
                row_id=r.id, session_id=str(r.session_id), meeting_external_id=r.meeting
            )
            for r in rows
        ]

    async def _mark(self, row_ids: Sequence[int], *, column: str) -> None:
        if not row_ids:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    f"UPDATE session_migrations SET {column} = now(), updated_at = now() "
                    "WHERE id = ANY(:ids)"
                ),
                {"ids": list(row_ids)},
            )


async def record_unused_meeting(engine: AsyncEngine, row_id: int, meeting_external_id: str) -> str:
    """Write down a meeting its row made that nobody uses, before deleting it.

    "recorded": on its settled row (so the cleanup retries the deletion if this
    one fails); "unrecorded": the row holds another meeting, ours is nobody's;
    "in_use": the row (another process) or a session holds this very meeting —
    never delete it.
    """
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT m.state, m.new_meeting_external_id, EXISTS (SELECT 1 FROM sessions s "
                    "WHERE s.id = m.session_id AND s.meeting_external_id = :mid) AS used "
                    "FROM session_migrations m WHERE m.id = :id FOR UPDATE"
                ),
                {"id": row_id, "mid": meeting_external_id},
            )
        ).first()
        if row is None or row.used:
            return "in_use"
        if row.new_meeting_external_id not in (None, meeting_external_id):
            return "unrecorded"  # a duplicate: the row holds another one
        if row.state not in (M.SKIPPED.value, M.ROLLED_BACK.value):
            # An unsettled row reuses it (Google's derived id, Zoom's marker); a
            # failed row's retry would reuse the one it holds. A failed row with
            # none: ours is nobody's, deleted unrecorded.
            if row.state == M.FAILED.value and row.new_meeting_external_id is None:
                return "unrecorded"
            return "in_use"
        await conn.execute(
            text(
                "UPDATE session_migrations SET new_meeting_external_id = :mid, "
                "new_meeting_deleted_at = NULL, updated_at = now() WHERE id = :id"
            ),
            {"id": row_id, "mid": meeting_external_id},
        )
    return "recorded"
