"""PostgreSQL adapter of the migrator: the one-transaction outcomes of claimed rows.

Every outcome of a row (migrated, failed, skipped) commits together with the
session update, the switch's counters and the outbox row of its event, so a
crash leaves either all of it or none.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.core import outbox
from services.core.db.models import MigrationState
from services.core.db.models import MigrationState as M
from services.core.db.models import SwitchState as S
from services.core.messages import SessionFailed, SessionMigrated, message_row
from services.core.settings import CommonSettings
from services.core.switching import sql_state, sql_states
from services.migrator.adapters.db.claim import ClaimedRow
from services.migrator.adapters.db.common import (
    ELIGIBLE_SQL,
    SOURCE,
    UNSETTLED_SQL,
    complete_and_report,
    complete_if_settled,
)
from services.migrator.adapters.db.rollback import record_unused_meeting
from services.providers import Meeting

# How a row settling in each final state moves its switch's counters.
COUNTER_OF: dict[MigrationState, str] = {
    M.MIGRATED: "sessions_migrated = sessions_migrated + 1",
    M.FAILED: "sessions_failed = sessions_failed + 1",
    M.SKIPPED: "sessions_total = greatest(sessions_total - 1, 0)",
}


def link_of(meeting: Meeting) -> str:
    """A moved session's join link (the executor never completes a meeting without one)."""
    if not meeting.join_url:
        raise ValueError(f"meeting {meeting.external_id} has no join link to move a session to")
    return meeting.join_url


class OutcomeStore:
    """How a claimed row ends: its meeting recorded, its session moved, or it failed or skipped."""

    def __init__(self, engine: AsyncEngine, *, topics: CommonSettings) -> None:
        self.engine = engine
        self.topics = topics
        # The `switch.settled` payloads of the switches these writes settled, once
        # committed: the executor logs its per-switch summary from them (`drain_settled`).
        self._settled: list[dict[str, Any]] = []

    def _note(self, report: Sequence[dict[str, Any]]) -> None:
        """Remember the switches a committed transaction settled (its `switch.settled` rows)."""
        self._settled.extend(dict(r["payload"]) for r in report)

    def drain_settled(self) -> list[dict[str, Any]]:
        """The switches settled by this store's writes since the last call."""
        drained, self._settled = self._settled, []
        return drained

    async def record_meetings(self, done: Sequence[tuple[ClaimedRow, Meeting]]) -> list[bool]:
        """Remember each created meeting before anything else can fail: a retry reuses it.

        One statement for several rows (the executor's group commit). False
        where the row was settled meanwhile (a rollback cancelled it): that
        meeting is then nobody's, and the caller deletes it.
        """
        # One statement: autocommit spares the BEGIN and COMMIT round trips.
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            recorded = set(
                (
                    await conn.execute(
                        text(
                            "UPDATE session_migrations m SET state = "
                            f"{sql_state(M.MEETING_CREATED)}, "
                            "new_meeting_external_id = i.mid, new_join_url = i.url, "
                            "updated_at = now() FROM unnest(CAST(:ids AS bigint[]), "
                            "CAST(:mids AS text[]), CAST(:urls AS text[])) AS i(id, mid, url) "
                            f"WHERE m.id = i.id AND m.state = {sql_state(M.PENDING)} RETURNING m.id"
                        ),
                        {
                            "ids": [row.id for row, _ in done],
                            "mids": [meeting.external_id for _, meeting in done],
                            "urls": [meeting.join_url for _, meeting in done],
                        },
                    )
                ).scalars()
            )
        return [row.id in recorded for row, _ in done]

    async def complete_migrations(self, done: Sequence[tuple[ClaimedRow, Meeting]]) -> list[bool]:
        """Move each row's session to its new meeting where it may still move; True where moved.

        One transaction for all of them: each session's update (only if still
        eligible, still on the provider the plan saw, and its switch still
        current), its row and its switch's counters -- one statement -- then
        the check whether the switches are complete, then the moved rows'
        `session.migrated` outbox rows (`core.outbox`, the last write). A row
        whose session may no longer move is settled SKIPPED. No two rows of
        one session may be in one call.
        """
        now = datetime.now(UTC)
        migrated = [
            message_row(
                SessionMigrated(
                    switch_id=row.switch_id,
                    tutor_id=row.tutor_id,
                    session_id=row.session_id,
                    student_id=row.student_id,
                    booking_id=row.booking_id,
                    scheduled_start_at=row.scheduled_start_at,
                    kind=row.kind,
                    provider=row.to_provider,
                    meeting_external_id=meeting.external_id,
                    join_url=link_of(meeting),
                    previous_provider=row.from_provider,
                    previous_meeting_external_id=row.previous_meeting_external_id,
                    migrated_at=now,
                ),
                tutor_id=row.tutor_id,
                source=SOURCE,
                topics=self.topics,
            )
            for row, meeting in done
        ]
        sql = f"""
            WITH input AS (
                SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:sids AS uuid[]),
                    CAST(:switches AS uuid[]), CAST(:froms AS text[]), CAST(:tos AS text[]),
                    CAST(:mids AS text[]), CAST(:urls AS text[]))
                    AS i(id, sid, switch, from_p, to_p, mid, url)
            ), moved AS (
                UPDATE sessions s SET provider = i.to_p, meeting_external_id = i.mid,
                    join_url = i.url, meeting_created_at = :now, version = s.version + 1,
                    updated_at = :now
                FROM input i
                JOIN provider_switches p ON p.id = i.switch
                JOIN tutor_video_provider_connections c ON c.tutor_id = p.tutor_id
                WHERE s.id = i.sid
                  AND s.status IN {ELIGIBLE_SQL} AND s.scheduled_start_at >= :now
                  AND s.provider IS NOT DISTINCT FROM i.from_p
                  AND p.state IN {sql_states((S.PLANNING, S.MIGRATING))}
                  AND c.generation = p.generation AND c.provider = p.to_provider
                RETURNING i.id
            ), settled AS (
                UPDATE session_migrations m SET
                    state = CASE WHEN m.id IN (SELECT id FROM moved) THEN {sql_state(M.MIGRATED)}
                                 ELSE {sql_state(M.SKIPPED)} END,
                    last_error = CASE WHEN m.id IN (SELECT id FROM moved) THEN NULL
                                      ELSE 'no longer eligible' END,
                    new_meeting_external_id = coalesce(i.mid, m.new_meeting_external_id),
                    new_join_url = coalesce(i.url, m.new_join_url), updated_at = now()
                FROM input i
                WHERE m.id = i.id AND m.state IN {UNSETTLED_SQL}
                RETURNING m.switch_id, m.state
            ), counted AS (
                UPDATE provider_switches p SET
                    sessions_migrated = p.sessions_migrated + n.migrated,
                    sessions_total = greatest(p.sessions_total - n.skipped, 0)
                FROM (
                    SELECT switch_id,
                        count(*) FILTER (WHERE state = {sql_state(M.MIGRATED)}) AS migrated,
                        count(*) FILTER (WHERE state = {sql_state(M.SKIPPED)}) AS skipped
                    FROM settled GROUP BY switch_id
                ) n
                WHERE p.id = n.switch_id
                RETURNING 1
            )
            SELECT id FROM moved
        """
        params = {
            "now": now,
            "ids": [row.id for row, _ in done],
            "sids": [row.session_id for row, _ in done],
            "switches": [row.switch_id for row, _ in done],
            "froms": [row.from_provider for row, _ in done],
            "tos": [row.to_provider for row, _ in done],
            "mids": [meeting.external_id for _, meeting in done],
            "urls": [meeting.join_url for _, meeting in done],
        }
        async with self.engine.begin() as conn:
            moved = set((await conn.execute(text(sql), params)).scalars())
            settled = await complete_and_report(
                conn, sorted({row.switch_id for row, _ in done}), topics=self.topics
            )
            # The last write (core.outbox): the moved rows' events, in the group's order,
            # then each switch this settled.
            await outbox.append_group_async(
                conn,
                [
                    *(e for (row, _), e in zip(done, migrated, strict=True) if row.id in moved),
                    *settled,
                ],
            )
        self._note(settled)
        return [row.id in moved for row, _ in done]

    async def skip(self, row: ClaimedRow, *, why: str) -> None:
        """Settle a row without moving its session (cancelled, started, superseded)."""
        async with self.engine.begin() as conn:
            await self._settle(conn, row, state=M.SKIPPED, error=why)
            settled = await complete_if_settled(conn, row.switch_id, topics=self.topics)
            await outbox.append_async(conn, row.tutor_id, settled)  # the last write
        self._note(settled)

    async def fail(self, row: ClaimedRow, *, reason: str, detail: str, retryable: bool) -> bool:
        """Settle a row as failed, write its `session.failed`; False if settled already."""
        async with self.engine.begin() as conn:
            settled = await self._settle(conn, row, state=M.FAILED, error=f"{reason}: {detail}")
            if settled:
                await conn.execute(
                    text("UPDATE session_migrations SET retryable = :r WHERE id = :id"),
                    {"r": retryable, "id": row.id},
                )
            report = await complete_if_settled(conn, row.switch_id, topics=self.topics)
            failed = (
                [self._failed_event(row=row, reason=reason, detail=detail, retryable=retryable)]
                if settled
                else []
            )
            # the last write (core.outbox)
            await outbox.append_async(conn, row.tutor_id, [*failed, *report])
        self._note(report)
        return settled

    async def fail_remaining(
        self, *, switch_id: str, reason: str, detail: str, batch: int = 500
    ) -> int:
        """Fail every unsettled row of a switch (e.g. revoked grant), in batches."""
        failed = 0
        while True:
            async with self.engine.begin() as conn:
                rows = (
                    await conn.execute(
                        text(
                            "SELECT m.id, m.switch_id, m.session_id, m.tutor_id, s.student_id, "
                            "s.booking_id, m.kind, m.attempts, m.to_provider, "
                            "s.scheduled_start_at FROM session_migrations m "
                            "JOIN sessions s ON s.id = m.session_id "
                            f"WHERE m.switch_id = :id AND m.state IN {UNSETTLED_SQL} "
                            "ORDER BY m.scheduled_start_at LIMIT :n FOR UPDATE OF m SKIP LOCKED"
                        ),
                        {"id": switch_id, "n": batch},
                    )
                ).all()
                if rows:
                    ids = [r.id for r in rows]
                    await conn.execute(
                        text(
                            f"UPDATE session_migrations SET state = {sql_state(M.FAILED)}, "
                            "retryable = true, last_error = :e, updated_at = now() "
                            "WHERE id = ANY(:ids)"
                        ),
                        {"ids": ids, "e": f"{reason}: {detail}"},
                    )
                    await conn.execute(
                        text(
                            "UPDATE provider_switches SET sessions_failed = sessions_failed + :n "
                            "WHERE id = :id"
                        ),
                        {"id": switch_id, "n": len(ids)},
                    )
                report = await complete_if_settled(conn, switch_id, topics=self.topics)
                await outbox.append_group_async(  # the last write (core.outbox)
                    conn,
                    [
                        *(
                            self._failed_event(
                                row=r, reason=reason, detail=detail, retryable=True, attempts=None
                            )
                            for r in rows
                        ),
                        *report,
                    ],
                )
            self._note(report)
            if not rows:
                return failed
            failed += len(rows)

    async def unused_meeting(self, row: ClaimedRow, meeting: Meeting) -> str:
        """Record a meeting this row made that nobody will use (see `record_unused_meeting`)."""
        return await record_unused_meeting(self.engine, row.id, meeting.external_id)

    async def unused_meeting_deleted(self, row: ClaimedRow, meeting: Meeting) -> None:
        """The recorded unused meeting is gone: the cleanup need not delete it again."""
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE session_migrations SET new_meeting_deleted_at = now(), "
                    "updated_at = now() WHERE id = :id AND new_meeting_external_id = :mid"
                ),
                {"id": row.id, "mid": meeting.external_id},
            )

    async def retry_later(
        self, row: ClaimedRow, *, at: datetime, error: str, counts_as_attempt: bool
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE session_migrations SET next_attempt_at = :at, last_error = :e, "
                    "attempts = attempts - :undo, updated_at = now() "
                    f"WHERE id = :id AND state IN {UNSETTLED_SQL}"
                ),
                {"id": row.id, "at": at, "e": error, "undo": 0 if counts_as_attempt else 1},
            )

    # -- pieces of the transactions above ---------------------------------------

    async def _settle(
        self,
        conn: AsyncConnection,
        row: ClaimedRow,
        *,
        state: str,
        error: str | None,
        meeting: Meeting | None = None,
    ) -> bool:
        """Mark the row final and move the switch's counters; False if it was settled already."""
        settled = (
            await conn.execute(
                text(
                    "UPDATE session_migrations SET state = :state, last_error = :e, "
                    "new_meeting_external_id = coalesce(:mid, new_meeting_external_id), "
                    "new_join_url = coalesce(:url, new_join_url), updated_at = now() "
                    f"WHERE id = :id AND state IN {UNSETTLED_SQL} RETURNING id"
                ),
                {
                    "id": row.id,
                    "state": state,
                    "e": error,
                    "mid": meeting.external_id if meeting else None,
                    "url": meeting.join_url if meeting else None,
                },
            )
        ).first()
        if settled is None:
            return False
        counter = COUNTER_OF[MigrationState(state)]
        await conn.execute(
            text(f"UPDATE provider_switches SET {counter} WHERE id = :id"), {"id": row.switch_id}
        )
        return True

    def _failed_event(
        self,
        *,
        row: Any,
        reason: str,
        detail: str,
        retryable: bool,
        attempts: int | None = 0,
    ) -> dict[str, Any]:
        return message_row(
            SessionFailed(
                switch_id=str(row.switch_id),
                tutor_id=str(row.tutor_id),
                session_id=str(row.session_id),
                student_id=str(row.student_id),
                booking_id=str(row.booking_id) if row.booking_id else None,
                scheduled_start_at=row.scheduled_start_at,
                kind=row.kind,
                provider=row.to_provider,
                reason=reason,
                detail=detail[:2000],
                retryable=retryable,
                attempts=max(int(row.attempts), 1),
                failed_at=datetime.now(UTC),
            ),
            tutor_id=str(row.tutor_id),
            source=SOURCE,
            topics=self.topics,
            event_id=uuid.uuid4(),
        )
