"""The executor's claims, within each provider's daily quota.

Rows are claimed with a lease (`next_attempt_at` moved into the future) under
`FOR UPDATE SKIP LOCKED`, so several executors never take the same row, and a
dead one's rows come back.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.core import outbox
from services.core.db.models import SwitchState as S
from services.core.messages import SwitchDelayed, message_row
from services.core.settings import CommonSettings
from services.core.switching import sql_states
from services.migrator.adapters.db.common import SOURCE, UNSETTLED_SQL
from services.migrator.domain import ELIGIBLE_STATUSES


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """One claimed migration with what creating its meeting needs."""

    id: int
    switch_id: str
    session_id: str
    tutor_id: str
    student_id: str
    booking_id: str | None
    state: str
    kind: str
    attempts: int
    from_provider: str | None
    to_provider: str
    scheduled_start_at: datetime
    duration_minutes: int
    session_status: str
    topic: str
    timezone: str
    new_meeting_external_id: str | None
    new_join_url: str | None
    previous_meeting_external_id: str | None
    switch_state: str
    switch_generation: int
    connection_generation: int | None
    connection_provider: str | None
    # What the last attempt left (a usage-limit refusal counts its streak there).
    last_error: str | None = None
    # The quota day whose budget this claim spent a create of (None: it spent none).
    budget_day: date | None = None

    @property
    def switch_current(self) -> bool:
        """The switch is still the tutor's newest and still running."""
        return (
            self.switch_state in (S.PLANNING, S.MIGRATING)
            and self.connection_generation == self.switch_generation
            and self.connection_provider == self.to_provider
        )


class ClaimStore:
    """Claims and the daily create budget they spend; the waits they announce."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        topics: CommonSettings,
        daily_caps: Mapping[str, int] | None = None,
    ) -> None:
        self.engine = engine
        self.topics = topics
        # spent from a budget reserved at claim time, so no request goes over.
        self.daily_caps = {p: cap for p, cap in (daily_caps or {}).items() if cap > 0}

    async def active_tutors(self) -> list[str]:
        """Tutors whose switch is being planned or migrated: the executor's work list."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT DISTINCT tutor_id FROM provider_switches "
                        f"WHERE state IN {sql_states((S.PLANNING, S.MIGRATING))}"
                    )
                )
            ).scalars()
            return [str(t) for t in rows]

    async def claim(
        self, *, quotas: Mapping[str, int], limit: int, lease: timedelta
    ) -> list[ClaimedRow]:
        """Claim due rows, soonest first, at most `quotas[tutor]` per tutor and `limit` in all."""
        if not quotas or limit <= 0:
            return []
        sql = f"""
            WITH picked AS (
                SELECT m.id FROM unnest(CAST(:tutors AS uuid[]), CAST(:ks AS int[])) AS t(tutor, k)
                CROSS JOIN LATERAL (
                    SELECT id FROM session_migrations m
                    WHERE m.tutor_id = t.tutor AND m.state IN {UNSETTLED_SQL}
                      AND m.next_attempt_at <= now()
                    ORDER BY m.scheduled_start_at
                    LIMIT t.k
                    FOR UPDATE SKIP LOCKED
                ) m
                LIMIT :limit
            )
            UPDATE session_migrations m
            SET next_attempt_at = now() + :lease, attempts = m.attempts + 1, updated_at = now()
            FROM picked
            JOIN session_migrations x ON x.id = picked.id
            JOIN sessions s ON s.id = x.session_id
            JOIN bookings b ON b.id = s.booking_id
            JOIN provider_switches p ON p.id = x.switch_id
            LEFT JOIN tutor_video_provider_connections c ON c.tutor_id = x.tutor_id
            WHERE m.id = picked.id
            RETURNING m.id, m.switch_id, m.session_id, m.tutor_id, s.student_id, s.booking_id,
                m.state, m.kind, m.attempts, m.from_provider, m.to_provider,
                s.scheduled_start_at, s.duration_minutes, s.status AS session_status,
                b.topic, b.timezone,
                m.new_meeting_external_id, m.new_join_url, m.previous_meeting_external_id,
                p.state AS switch_state, p.generation AS switch_generation,
                c.generation AS connection_generation, c.provider AS connection_provider,
                m.last_error
        """
        delayed: list[dict[str, Any]] = []
        # One quota day per provider for the whole claim: the budget checked and
        # the budget spent are the same day's, even when midnight falls between.
        now = datetime.now(UTC)
        windows = {provider: quota_window(provider, now) for provider in self.daily_caps}
        days = {provider: day for provider, (day, _) in windows.items()}
        async with self.engine.begin() as conn:
            quotas = await self._within_budget(conn, quotas, delayed, windows=windows)
            tutors = [t for t, k in quotas.items() if k > 0]
            params = {
                "tutors": tutors,
                "ks": [quotas[t] for t in tutors],
                "limit": limit,
                "lease": lease,
            }
            rows = (await conn.execute(text(sql), params)).all() if tutors else []
            spent = await self._spend_budget(conn, rows, days=days, now=now)
            await outbox.append_group_async(conn, delayed)  # the last write: core.outbox
        return [
            ClaimedRow(
                **{
                    **r._mapping,
                    "id": r.id,
                    "switch_id": str(r.switch_id),
                    "session_id": str(r.session_id),
                    "tutor_id": str(r.tutor_id),
                    "student_id": str(r.student_id),
                    "booking_id": str(r.booking_id) if r.booking_id else None,
                    "budget_day": days[r.to_provider] if r.id in spent else None,
                }
            )
            for r in rows
        ]

    async def _within_budget(
        self,
        conn: AsyncConnection,
        quotas: Mapping[str, int],
        delayed: list[dict[str, Any]],
        *,
        windows: Mapping[str, tuple[date, datetime]],
    ) -> dict[str, int]:
        """Cut each tutor's claim to the creates left in the quota day `windows` names.

        A tutor with due rows and nothing left has them moved to the quota's
        reset (soonest first survives: the claim orders by start time) and
        the wait announced. Every capped tutor's usage row is locked until the
        claim's transaction ends, so two executors never spend one budget twice.
        """
        quotas = dict(quotas)
        for provider, cap in self.daily_caps.items():
            capped = [
                str(t)
                for t in (
                    await conn.execute(
                        text(
                            "SELECT DISTINCT tutor_id FROM provider_switches "
                            f"WHERE state IN {sql_states((S.PLANNING, S.MIGRATING))} AND "
                            "to_provider = :p "
                            "AND tutor_id = ANY(CAST(:tutors AS uuid[]))"
                        ),
                        {"p": provider, "tutors": list(quotas)},
                    )
                ).scalars()
            ]
            if not capped:
                continue
            day, resets_at = windows[provider]
            # One statement leaves each tutor's row of the day locked, in tutor
            # order: the existing row (a no-op update locks it) or a new one.
            # Not "insert if missing, then SELECT ... FOR UPDATE": a row whose
            # key changed between the two statements (its day moved by another
            # transaction) was skipped by the SELECT, nothing was locked, the
            # tutor looked unspent, and the creates claimed were counted on no
            # row at all, so the provider saw more than its daily cap.
            usage = await conn.execute(
                text(
                    "INSERT INTO provider_quota_usage AS u (tutor_id, provider, quota_day) "
                    "SELECT t, :p, :day FROM unnest(CAST(:tutors AS uuid[])) AS t ORDER BY t "
                    "ON CONFLICT (tutor_id, provider, quota_day) DO UPDATE SET used = u.used "
                    "RETURNING u.tutor_id, u.used"
                ),
                {"p": provider, "day": day, "tutors": sorted(capped)},
            )
            used: dict[str, int] = {str(r.tutor_id): int(r.used) for r in usage}
            for tutor in capped:
                left = cap - used.get(tutor, 0)
                if left <= 0:
                    quotas[tutor] = 0
                    await self._wait_for_reset(
                        conn,
                        tutor_id=tutor,
                        provider=provider,
                        resets_at=resets_at,
                        delayed=delayed,
                    )
                else:
                    quotas[tutor] = min(quotas[tutor], left)
        return quotas

    async def _spend_budget(
        self,
        conn: AsyncConnection,
        rows: Sequence[Any],
        *,
        days: Mapping[str, date],
        now: datetime,
    ) -> set[int]:
        """Count one create for each claimed row at a capped provider that still needs one.

        Counted on the day whose budget `_within_budget` checked; the ids of
        the rows counted are returned (their create may be given back).
        """
        counted = [
            r
            for r in rows
            if r.to_provider in self.daily_caps
            and r.new_meeting_external_id is None
            # Rows the executor will skip without a create cost nothing.
            and r.switch_state in (S.PLANNING, S.MIGRATING)
            and r.connection_generation == r.switch_generation
            and r.connection_provider == r.to_provider
            and r.session_status in ELIGIBLE_STATUSES
            and r.scheduled_start_at >= now
        ]
        spent: Counter[tuple[str, str]] = Counter((str(r.tutor_id), r.to_provider) for r in counted)
        for (tutor, provider), n in sorted(spent.items()):
            # An upsert: a create is never left uncounted, even for a tutor
            # whose switch began after the budget was read (no row yet).
            await conn.execute(
                text(
                    "INSERT INTO provider_quota_usage AS u (tutor_id, provider, quota_day, used) "
                    "VALUES (:t, :p, :day, :n) ON CONFLICT (tutor_id, provider, quota_day) "
                    "DO UPDATE SET used = u.used + :n"
                ),
                {"n": n, "t": tutor, "p": provider, "day": days[provider]},
            )
        return {r.id for r in counted}

    async def give_back(self, row: ClaimedRow) -> None:
        """Return the create the claim counted for `row`: it sent nothing to the provider.

        To the day it was counted on (`row.budget_day`); nothing if none was.
        """
        day = row.budget_day
        if day is None:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE provider_quota_usage SET used = greatest(used - 1, 0) "
                    "WHERE tutor_id = :t AND provider = :p AND quota_day = :day"
                ),
                {"t": row.tutor_id, "p": row.to_provider, "day": day},
            )

    async def _wait_for_reset(
        self,
        conn: AsyncConnection,
        *,
        tutor_id: str,
        provider: str,
        resets_at: datetime,
        delayed: list[dict[str, Any]],
    ) -> None:
        """Move the tutor's due rows at `provider` to the quota reset and announce the wait."""
        switches = (
            await conn.execute(
                text(
                    "UPDATE session_migrations SET next_attempt_at = :at, "
                    "last_error = 'quota_exceeded: daily create limit reached', updated_at = now() "
                    f"WHERE tutor_id = :t AND to_provider = :p AND state IN {UNSETTLED_SQL} "
                    # Only rows due now: a claimed one (its lease ahead) is being
                    # created with budget already spent, and moves today.
                    "AND new_meeting_external_id IS NULL AND next_attempt_at <= now() "
                    "RETURNING switch_id"
                ),
                {"at": resets_at, "t": tutor_id, "p": provider},
            )
        ).scalars()
        for switch_id in set(switches):
            await self._announce_wait(
                conn,
                switch_id=str(switch_id),
                until=resets_at,
                reason="daily_quota",
                delayed=delayed,
            )

    async def _announce_wait(
        self,
        conn: AsyncConnection,
        *,
        switch_id: str,
        until: datetime,
        reason: str,
        delayed: list[dict[str, Any]],
    ) -> None:
        """Record when the switch's remaining sessions will move; tell once per new time.

        The `switch.delayed` row goes to `delayed`: the transaction appends it
        to the outbox as its last write (see `core.outbox`).
        """
        switch = (
            await conn.execute(
                text(
                    "UPDATE provider_switches SET waiting_until = :u, waiting_reason = :r "
                    f"WHERE id = :id AND state IN {sql_states((S.PLANNING, S.MIGRATING))} "
                    "AND waiting_until IS DISTINCT FROM :u "
                    "RETURNING tutor_id, to_provider, sessions_total, sessions_migrated, "
                    "sessions_failed"
                ),
                {"id": switch_id, "u": until, "r": reason},
            )
        ).first()
        if switch is None:
            return
        waiting = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM session_migrations "
                    f"WHERE switch_id = :id AND state IN {UNSETTLED_SQL} AND next_attempt_at >= :u"
                ),
                {"id": switch_id, "u": until},
            )
        ).scalar_one()
        # Once per new resume time: the conditional UPDATE above (a row lock) lets
        # only one executor through.
        delayed.append(
            self._delayed_event(
                switch_id=switch_id,
                switch=switch,
                reason=reason,
                waiting=int(waiting),
                resumes_at=until,
            )
        )

    async def _announce_usage_limits(
        self, conn: AsyncConnection, *, switch_id: str, delayed: list[dict[str, Any]]
    ) -> None:
        """Tell the tutor, once per switch, that Google's usage limits hold the rest back.

        `switch.delayed` with reason `usage_limits` and no `resumes_at`: Google's
        "Calendar usage limits exceeded" names no time, so neither do we
        (relink keeps trying with growing waits). `waiting_until` stays unset:
        the page shows the switch as still moving, which it is.
        """
        switch = (
            await conn.execute(
                text(
                    "UPDATE provider_switches SET waiting_reason = 'usage_limits' "
                    f"WHERE id = :id AND state IN {sql_states((S.PLANNING, S.MIGRATING))} "
                    "AND waiting_reason IS DISTINCT FROM 'usage_limits' "
                    "RETURNING tutor_id, to_provider, sessions_total, sessions_migrated, "
                    "sessions_failed"
                ),
                {"id": switch_id},
            )
        ).first()
        if switch is None:
            return
        waiting = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM session_migrations "
                    f"WHERE switch_id = :id AND state IN {UNSETTLED_SQL}"
                ),
                {"id": switch_id},
            )
        ).scalar_one()
        delayed.append(
            self._delayed_event(
                switch_id=switch_id,
                switch=switch,
                reason="usage_limits",
                waiting=int(waiting),
                resumes_at=None,
            )
        )

    def _delayed_event(
        self,
        *,
        switch_id: str,
        switch: Any,
        reason: str,
        waiting: int,
        resumes_at: datetime | None,
    ) -> dict[str, Any]:
        """The `switch.delayed` outbox row; `resumes_at` only when the provider named a time."""
        return message_row(
            SwitchDelayed(
                switch_id=switch_id,
                tutor_id=str(switch.tutor_id),
                provider=switch.to_provider,
                reason=reason,
                sessions_total=switch.sessions_total,
                sessions_migrated=switch.sessions_migrated,
                sessions_failed=switch.sessions_failed,
                sessions_waiting=waiting,
                delayed_at=datetime.now(UTC),
                resumes_at=resumes_at,
            ),
            tutor_id=str(switch.tutor_id),
            source=SOURCE,
            topics=self.topics,
            event_id=uuid.uuid4(),
        )

    async def pause_switch(
        self, switch_id: str, *, until: datetime, quota: bool = False, usage_limited: bool = False
    ) -> None:
        """Nothing of this switch is tried before `until` (a provider's stated wait, or ours).

        A daily quota (`quota`) the budget did not foresee — creates made
        outside relink count too — also spends the rest of the day's budget
        and is announced to the tutor. Google's usage limits (`usage_limited`)
        are announced too, once per switch, with no time: Google gives none.
        """
        delayed: list[dict[str, Any]] = []
        async with self.engine.begin() as conn:
            switch = (
                await conn.execute(
                    text(
                        # The rows locked in id order: two pauses of one switch
                        # (429s of rows in flight together) wait, never deadlock.
                        "WITH rows AS (SELECT id FROM session_migrations "
                        f"WHERE switch_id = :id AND state IN {UNSETTLED_SQL} "
                        "ORDER BY id FOR UPDATE) "
                        "UPDATE session_migrations m SET next_attempt_at = "
                        "greatest(m.next_attempt_at, :u) FROM rows WHERE m.id = rows.id "
                        "RETURNING m.tutor_id, m.to_provider"
                    ),
                    {"id": switch_id, "u": until},
                )
            ).first()
            if usage_limited and switch is not None:
                await self._announce_usage_limits(conn, switch_id=switch_id, delayed=delayed)
            if quota and switch is not None:
                await self._spend_day(
                    conn, switch_id=switch_id, switch=switch, until=until, delayed=delayed
                )
            await outbox.append_group_async(conn, delayed)  # the last write: core.outbox

    async def _spend_day(
        self,
        conn: AsyncConnection,
        *,
        switch_id: str,
        switch: Any,
        until: datetime,
        delayed: list[dict[str, Any]],
    ) -> None:
        """An unforeseen daily quota: the rest of today's budget is spent, the wait announced."""
        cap = self.daily_caps.get(switch.to_provider)
        if cap:
            day, _ = quota_window(switch.to_provider, datetime.now(UTC))
            await conn.execute(
                text(
                    "INSERT INTO provider_quota_usage (tutor_id, provider, quota_day, used) "
                    "VALUES (:t, :p, :day, :cap) ON CONFLICT (tutor_id, provider, quota_day) "
                    "DO UPDATE SET used = greatest(provider_quota_usage.used, :cap)"
                ),
                {"t": switch.tutor_id, "p": switch.to_provider, "day": day, "cap": cap},
            )
        await self._announce_wait(
            conn, switch_id=switch_id, until=until, reason="daily_quota", delayed=delayed
        )


def quota_window(provider: str, now: datetime) -> tuple[date, datetime]:
    """The provider's quota day at `now` and when it resets (Zoom counts UTC days)."""
    day = now.astimezone(UTC).date()
    resets_at = datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)
    return day, resets_at
