"""PostgreSQL adapter of the migrator: the plan, claims, and the one-transaction outcomes.

Every outcome of a row (migrated, failed, skipped) commits together with the
session update, the switch's counters and the outbox row of its event, so a
crash leaves either all of it or none. Rows are claimed with a lease
(`next_attempt_at` moved into the future) under `FOR UPDATE SKIP LOCKED`, so
several executors never take the same row, and a dead one's rows come back.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.core import events
from services.core.db.models import Outbox
from services.core.settings import CommonSettings, normalize_database_url
from services.core.tokens import TokenCipher
from services.migrator.domain import (
    ELIGIBLE_STATUSES,
    UNSETTLED_STATES,
    SwitchRef,
    final_switch_state,
)
from services.providers import Meeting, TokenSet

SOURCE = "/relink/migrator"

_UNSETTLED = "('PENDING', 'MEETING_CREATED')"
_ELIGIBLE = "(" + ", ".join(f"'{s}'" for s in ELIGIBLE_STATUSES) + ")"
assert UNSETTLED_STATES == ("PENDING", "MEETING_CREATED")


def switch_ref(row: Any) -> SwitchRef:
    """A `provider_switches` row (id, tutor_id, providers, generation, state) as a SwitchRef."""
    return SwitchRef(
        id=str(row.id),
        tutor_id=str(row.tutor_id),
        from_provider=row.from_provider,
        to_provider=row.to_provider,
        generation=row.generation,
        state=row.state,
    )


def make_async_engine(url: str, *, pool_size: int) -> AsyncEngine:
    """An async psycopg 3 engine with pre-ping (a restarted PostgreSQL is reconnected)."""
    return create_async_engine(
        normalize_database_url(url),
        pool_size=pool_size,
        # No overflow: connections beyond the pool were opened and closed at
        # every burst (one PostgreSQL backend forked per ~5 sessions migrated);
        # a task now waits for a pooled connection instead.
        max_overflow=0,
        pool_pre_ping=True,
    )


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """The tutor's connection as the migrator needs it (tokens still encrypted)."""

    tutor_id: str
    provider: str
    generation: int
    # None once the tutor removed relink's app at the provider (the gateway forgot the tokens).
    access_token_encrypted: bytes | None
    refresh_token_encrypted: bytes | None
    token_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class SlotTokens:
    """A connection's tokens for one provider: the current ones (slot "") or the kept previous."""

    tutor_id: str
    provider: str
    slot: str
    generation: int
    tokens: TokenSet


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

    @property
    def switch_current(self) -> bool:
        """The switch is still the tutor's newest and still running."""
        return (
            self.switch_state in ("PLANNING", "MIGRATING")
            and self.connection_generation == self.switch_generation
            and self.connection_provider == self.to_provider
        )


@dataclass(frozen=True, slots=True)
class PlanBatch:
    """One batch of the plan: rows inserted, rows seen, and where the next batch starts."""

    inserted: int
    seen: int
    cursor: tuple[datetime, str] | None


class MigrationStore:
    """Queries and transactions of the migrator, on an async engine."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        topics: CommonSettings,
        cipher: TokenCipher,
        daily_caps: Mapping[str, int] | None = None,
    ) -> None:
        self.engine = engine
        self.topics = topics
        self.cipher = cipher
        # Meeting creates a provider allows per user and quota day (Zoom: 100);
        # spent from a budget reserved at claim time, so no request goes over.
        self.daily_caps = {p: cap for p, cap in (daily_caps or {}).items() if cap > 0}

    async def close(self) -> None:
        await self.engine.dispose()

    # -- switches -------------------------------------------------------------

    async def switch(self, switch_id: str) -> SwitchRef | None:
        async with self.engine.connect() as conn:
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

    async def connection(self, tutor_id: str) -> ConnectionState | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT tutor_id, provider, generation, access_token_encrypted, "
                        "refresh_token_encrypted, token_expires_at "
                        "FROM tutor_video_provider_connections WHERE tutor_id = :t"
                    ),
                    {"t": tutor_id},
                )
            ).first()
        if row is None:
            return None
        return ConnectionState(
            tutor_id=str(row.tutor_id),
            provider=row.provider,
            generation=row.generation,
            access_token_encrypted=(
                bytes(row.access_token_encrypted) if row.access_token_encrypted else None
            ),
            refresh_token_encrypted=(
                bytes(row.refresh_token_encrypted) if row.refresh_token_encrypted else None
            ),
            token_expires_at=row.token_expires_at,
        )

    def tokens_of(self, connection: ConnectionState) -> TokenSet:
        """Decrypt a connection's tokens (they never leave this process)."""
        tutor = connection.tutor_id
        if connection.access_token_encrypted is None:
            # Forgotten tokens (the app was removed at the provider): an expired
            # token without a refresh token, so the first call raises
            # AuthorizationRevokedError and the rows end as reconnect_required,
            # without a request to the provider.
            return TokenSet(
                access_token="", refresh_token=None, expires_at=datetime.min.replace(tzinfo=UTC)
            )
        opened = self.cipher.open_tokens(
            connection.access_token_encrypted, connection.refresh_token_encrypted, tutor_id=tutor
        )
        return TokenSet(
            access_token=opened.access,
            refresh_token=opened.refresh,
            expires_at=connection.token_expires_at or datetime.now(UTC) + timedelta(hours=1),
        )

    def _sealed(self, tokens: TokenSet, *, tutor_id: str, prefix: str = "") -> dict[str, Any]:
        """Bind values `a`, `r`, `e`: the tokens encrypted for their (previous_?) columns."""
        # An empty refresh token is none: coalesce(:r, …) keeps the stored one.
        sealed = self.cipher.seal_tokens(
            tokens.access_token, tokens.refresh_token or None, tutor_id=tutor_id, slot=prefix
        )
        return {"a": sealed.access, "r": sealed.refresh, "e": tokens.expires_at}

    async def save_tokens(self, *, tutor_id: str, generation: int, tokens: TokenSet) -> None:
        """Persist refreshed tokens (Zoom rotated the refresh token: the old one is dead)."""
        values = {"t": tutor_id, "g": generation, **self._sealed(tokens, tutor_id=tutor_id)}
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE tutor_video_provider_connections SET access_token_encrypted = :a, "
                    "refresh_token_encrypted = coalesce(:r, refresh_token_encrypted), "
                    "token_expires_at = :e, updated_at = now() "
                    "WHERE tutor_id = :t AND generation = :g"
                ),
                values,
            )

    async def tokens_at(self, tutor_id: str, provider: str) -> SlotTokens | None:
        """The tutor's tokens for `provider`: current if connected to it, else the kept previous."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT provider, generation, access_token_encrypted, "
                        "refresh_token_encrypted, token_expires_at, previous_provider, "
                        "previous_access_token_encrypted, previous_refresh_token_encrypted, "
                        "previous_token_expires_at "
                        "FROM tutor_video_provider_connections WHERE tutor_id = :t"
                    ),
                    {"t": tutor_id},
                )
            ).first()
        if row is None:
            return None
        if row.provider == provider and row.access_token_encrypted is None:
            return None  # the app was removed at the provider: no tokens to act with
        if row.provider == provider:
            slot, access, refresh, expires = (
                "",
                row.access_token_encrypted,
                row.refresh_token_encrypted,
                row.token_expires_at,
            )
        elif row.previous_provider == provider and row.previous_access_token_encrypted:
            slot, access, refresh, expires = (
                "previous_",
                row.previous_access_token_encrypted,
                row.previous_refresh_token_encrypted,
                row.previous_token_expires_at,
            )
        else:
            return None
        opened = self.cipher.open_tokens(
            bytes(access), bytes(refresh) if refresh else None, tutor_id=tutor_id, slot=slot
        )
        tokens = TokenSet(
            access_token=opened.access,
            refresh_token=opened.refresh,
            expires_at=expires or datetime.now(UTC) + timedelta(hours=1),
        )
        return SlotTokens(
            tutor_id=tutor_id,
            provider=provider,
            slot=slot,
            generation=row.generation,
            tokens=tokens,
        )

    async def save_slot_tokens(self, slot: SlotTokens, tokens: TokenSet) -> None:
        """Persist refreshed tokens into the slot they came from (if it still holds them)."""
        if slot.slot == "":
            await self.save_tokens(
                tutor_id=slot.tutor_id, generation=slot.generation, tokens=tokens
            )
            return
        tutor = slot.tutor_id
        values = {
            "t": tutor,
            "g": slot.generation,
            "p": slot.provider,
            **self._sealed(tokens, tutor_id=tutor, prefix="previous_"),
        }
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE tutor_video_provider_connections SET "
                    "previous_access_token_encrypted = :a, "
                    "previous_refresh_token_encrypted = coalesce(:r, "
                    "previous_refresh_token_encrypted), previous_token_expires_at = :e, "
                    "updated_at = now() WHERE tutor_id = :t AND generation = :g "
                    "AND previous_provider = :p AND previous_access_token_encrypted IS NOT NULL"
                ),
                values,
            )

    async def mark_superseded(self, *, tutor_id: str, below_generation: int) -> list[str]:
        """Mark the tutor's unfinished switches older than `below_generation` SUPERSEDED.

        Their rows not yet started are skipped; rows with a meeting already
        created are left to the executor, which skips them and deletes it.
        """
        # Locks in the executor's order — the rows first, then their switch —
        # or a row settling meanwhile deadlocks with this transaction.
        async with self.engine.begin() as conn:
            candidates = list(
                (
                    await conn.execute(
                        text(
                            "SELECT id FROM provider_switches WHERE tutor_id = :t "
                            "AND generation < :g AND state IN ('PENDING', 'PLANNING', 'MIGRATING')"
                        ),
                        {"t": tutor_id, "g": below_generation},
                    )
                ).scalars()
            )
            if not candidates:
                return []
            await conn.execute(
                text(
                    "UPDATE session_migrations SET state = 'SKIPPED', "
                    "last_error = 'superseded', updated_at = now() "
                    "WHERE switch_id = ANY(:ids) AND state = 'PENDING'"
                ),
                {"ids": candidates},
            )
            ids = (
                (
                    await conn.execute(
                        text(
                            "UPDATE provider_switches SET state = 'SUPERSEDED', "
                            "completed_at = now() WHERE id = ANY(:ids) "
                            "AND state IN ('PENDING', 'PLANNING', 'MIGRATING') RETURNING id"
                        ),
                        {"ids": candidates},
                    )
                )
                .scalars()
                .all()
            )
        return [str(i) for i in ids]

    async def start_planning(self, switch_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE provider_switches SET state = 'PLANNING', "
                    "started_at = coalesce(started_at, now()) "
                    "WHERE id = :id AND state IN ('PENDING', 'PLANNING')"
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
                WHERE s.tutor_id = :tutor AND s.status IN {_ELIGIBLE}
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

    async def finish_planning(self, switch_id: str) -> None:
        """The plan is complete: let the switch complete (at once when nothing is left)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE provider_switches SET state = 'MIGRATING' "
                    "WHERE id = :id AND state IN ('PLANNING', 'COMPLETED', "
                    "'COMPLETED_WITH_FAILURES') AND EXISTS (SELECT 1 FROM session_migrations "
                    f"WHERE switch_id = :id AND state IN {_UNSETTLED})"
                ),
                {"id": switch_id},
            )
            await self._complete_if_settled(conn, switch_id, from_states=("PLANNING", "MIGRATING"))

    async def _complete_if_settled(
        self, conn: AsyncConnection, switch_id: str, *, from_states: Sequence[str] = ("MIGRATING",)
    ) -> str | None:
        return (await self._complete_settled(conn, [switch_id], from_states=from_states)).get(
            switch_id
        )

    async def _complete_settled(
        self,
        conn: AsyncConnection,
        switch_ids: Sequence[str],
        *,
        from_states: Sequence[str] = ("MIGRATING",),
    ) -> dict[str, str]:
        """Complete each of these switches with nothing left unsettled; their new states."""
        rows = await conn.execute(
            text(
                "UPDATE provider_switches p SET state = CASE WHEN p.sessions_failed > 0 "
                f"THEN '{final_switch_state(failed=1)}' ELSE '{final_switch_state(failed=0)}' "
                "END, completed_at = now(), waiting_until = NULL, waiting_reason = NULL "
                "WHERE p.id = ANY(CAST(:ids AS uuid[])) AND p.state = ANY(:states) "
                "AND NOT EXISTS (SELECT 1 FROM session_migrations m WHERE m.switch_id = p.id "
                f"AND m.state IN {_UNSETTLED}) RETURNING p.id, p.state"
            ),
            {"ids": list(switch_ids), "states": list(from_states)},
        )
        return {str(r.id): r.state for r in rows}

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
                        "AND p.state IN ('PLANNING', 'MIGRATING', 'COMPLETED', "
                        "'COMPLETED_WITH_FAILURES')"
                    ),
                    {"w": window},
                )
            ).all()
        return [switch_ref(r) for r in rows]

    async def active_tutors(self) -> list[str]:
        """Tutors whose switch is being planned or migrated: the executor's work list."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT DISTINCT tutor_id FROM provider_switches "
                        "WHERE state IN ('PLANNING', 'MIGRATING')"
                    )
                )
            ).scalars()
            return [str(t) for t in rows]

    async def auto_retry(self, *, max_retries: int, after: timedelta, limit: int = 500) -> int:
        """Queue retryable failures again by themselves: the n-th after `after` x 2^(n-1).

        Only rows of a switch that is still the tutor's current one, sessions
        still in the future, and not "reconnect required" (only the tutor can
        fix that: reconnecting starts a new switch, which plans them again).
        """
        if max_retries <= 0:
            return 0
        sql = """
            WITH due AS (
                SELECT m.id FROM session_migrations m
                JOIN provider_switches p ON p.id = m.switch_id
                JOIN tutor_video_provider_connections c ON c.tutor_id = p.tutor_id
                  AND c.generation = p.generation AND c.provider = p.to_provider
                WHERE m.state = 'FAILED' AND m.retryable AND m.kind <> 'rollback'
                  AND m.auto_retries < :max
                  AND coalesce(m.last_error, '') NOT LIKE 'reconnect_required%'
                  AND m.updated_at <= now() - :after * power(2, m.auto_retries)
                  AND m.scheduled_start_at > now()
                  AND p.state IN ('MIGRATING', 'COMPLETED', 'COMPLETED_WITH_FAILURES')
                ORDER BY m.scheduled_start_at
                LIMIT :limit
                FOR UPDATE OF m SKIP LOCKED
            ), queued AS (
                UPDATE session_migrations m SET state = 'PENDING', kind = 'retry',
                    attempts = 0, next_attempt_at = now(), retryable = NULL,
                    auto_retries = m.auto_retries + 1, updated_at = now()
                FROM due WHERE m.id = due.id
                RETURNING m.switch_id
            ), counts AS (
                SELECT switch_id, count(*) AS n FROM queued GROUP BY switch_id
            )
            UPDATE provider_switches p SET state = 'MIGRATING', completed_at = NULL,
                sessions_failed = greatest(p.sessions_failed - counts.n, 0)
            FROM counts WHERE p.id = counts.switch_id
            RETURNING counts.n
        """
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(text(sql), {"max": max_retries, "after": after, "limit": limit})
            ).scalars()
            return int(sum(rows))

    async def request_retry(self, *, switch_id: str, session_ids: Sequence[str]) -> int:
        """Put the switch's failed rows (all, or those named) back in the queue as retries."""
        only = "AND session_id = ANY(CAST(:sessions AS uuid[]))" if session_ids else ""
        async with self.engine.begin() as conn:
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
                "MIGRATING",
                "COMPLETED",
                "COMPLETED_WITH_FAILURES",
            ):
                return 0
            count = (
                await conn.execute(
                    text(
                        "UPDATE session_migrations SET state = 'PENDING', kind = 'retry', "
                        "attempts = 0, next_attempt_at = now(), retryable = NULL, "
                        f"updated_at = now() WHERE switch_id = :id AND state = 'FAILED' {only}"
                    ),
                    {"id": switch_id, "sessions": list(session_ids)},
                )
            ).rowcount
            if count:
                await conn.execute(
                    text(
                        "UPDATE provider_switches SET state = 'MIGRATING', completed_at = NULL, "
                        "sessions_failed = sessions_failed - :n WHERE id = :id"
                    ),
                    {"id": switch_id, "n": count},
                )
        return int(count)

    # -- the executor's claims -------------------------------------------------

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
                    WHERE m.tutor_id = t.tutor AND m.state IN {_UNSETTLED}
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
        async with self.engine.begin() as conn:
            quotas = await self._within_budget(conn, quotas)
            tutors = [t for t, k in quotas.items() if k > 0]
            params = {
                "tutors": tutors,
                "ks": [quotas[t] for t in tutors],
                "limit": limit,
                "lease": lease,
            }
            rows = (await conn.execute(text(sql), params)).all() if tutors else []
            await self._spend_budget(conn, rows)
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
                }
            )
            for r in rows
        ]

    async def _within_budget(
        self, conn: AsyncConnection, quotas: Mapping[str, int]
    ) -> dict[str, int]:
        """Cut each tutor's claim to the creates left today at a capped provider.

        A tutor with due rows and nothing left has them moved to the quota's
        reset (soonest first survives: the claim orders by start time) and
        the wait announced. The usage rows are locked until the claim's
        transaction ends, so two executors never spend one budget twice.
        """
        quotas = dict(quotas)
        for provider, cap in self.daily_caps.items():
            capped = [
                str(t)
                for t in (
                    await conn.execute(
                        text(
                            "SELECT DISTINCT tutor_id FROM provider_switches "
                            "WHERE state IN ('PLANNING', 'MIGRATING') AND to_provider = :p "
                            "AND tutor_id = ANY(CAST(:tutors AS uuid[]))"
                        ),
                        {"p": provider, "tutors": list(quotas)},
                    )
                ).scalars()
            ]
            if not capped:
                continue
            day, resets_at = quota_window(provider, datetime.now(UTC))
            await conn.execute(
                text(
                    "INSERT INTO provider_quota_usage (tutor_id, provider, quota_day) "
                    "SELECT t, :p, :day FROM unnest(CAST(:tutors AS uuid[])) AS t "
                    "ON CONFLICT DO NOTHING"
                ),
                {"p": provider, "day": day, "tutors": capped},
            )
            usage = await conn.execute(
                text(
                    "SELECT tutor_id, used FROM provider_quota_usage WHERE provider = :p "
                    "AND quota_day = :day AND tutor_id = ANY(CAST(:tutors AS uuid[])) "
                    "ORDER BY tutor_id FOR UPDATE"
                ),
                {"p": provider, "day": day, "tutors": capped},
            )
            used: dict[str, int] = {str(r.tutor_id): int(r.used) for r in usage}
            for tutor in capped:
                left = cap - used.get(tutor, 0)
                if left <= 0:
                    quotas[tutor] = 0
                    await self._wait_for_reset(
                        conn, tutor_id=tutor, provider=provider, resets_at=resets_at
                    )
                else:
                    quotas[tutor] = min(quotas[tutor], left)
        return quotas

    async def _spend_budget(self, conn: AsyncConnection, rows: Sequence[Any]) -> None:
        """Count one create for each claimed row at a capped provider that still needs one."""
        now = datetime.now(UTC)
        spent: Counter[tuple[str, str]] = Counter(
            (str(r.tutor_id), r.to_provider)
            for r in rows
            if r.to_provider in self.daily_caps
            and r.new_meeting_external_id is None
            # Rows the executor will skip without a create cost nothing.
            and r.switch_state in ("PLANNING", "MIGRATING")
            and r.connection_generation == r.switch_generation
            and r.connection_provider == r.to_provider
            and r.session_status in ELIGIBLE_STATUSES
            and r.scheduled_start_at >= now
        )
        for (tutor, provider), n in spent.items():
            day, _ = quota_window(provider, datetime.now(UTC))
            await conn.execute(
                text(
                    "UPDATE provider_quota_usage SET used = used + :n "
                    "WHERE tutor_id = :t AND provider = :p AND quota_day = :day"
                ),
                {"n": n, "t": tutor, "p": provider, "day": day},
            )

    async def _wait_for_reset(
        self, conn: AsyncConnection, *, tutor_id: str, provider: str, resets_at: datetime
    ) -> None:
        """Move the tutor's due rows at `provider` to the quota reset and announce the wait."""
        switches = (
            await conn.execute(
                text(
                    "UPDATE session_migrations SET next_attempt_at = :at, "
                    "last_error = 'quota_exceeded: daily create limit reached', updated_at = now() "
                    f"WHERE tutor_id = :t AND to_provider = :p AND state IN {_UNSETTLED} "
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
                conn, switch_id=str(switch_id), until=resets_at, reason="daily_quota"
            )

    async def _announce_wait(
        self, conn: AsyncConnection, *, switch_id: str, until: datetime, reason: str
    ) -> None:
        """Record when the switch's remaining sessions will move; tell once per new time."""
        switch = (
            await conn.execute(
                text(
                    "UPDATE provider_switches SET waiting_until = :u, waiting_reason = :r "
                    "WHERE id = :id AND state IN ('PLANNING', 'MIGRATING') "
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
                    f"WHERE switch_id = :id AND state IN {_UNSETTLED} AND next_attempt_at >= :u"
                ),
                {"id": switch_id, "u": until},
            )
        ).scalar_one()
        await conn.execute(
            insert(Outbox).values(
                **events.outbox_row(
                    "switch.delayed",
                    {
                        "switch_id": switch_id,
                        "tutor_id": str(switch.tutor_id),
                        "provider": switch.to_provider,
                        "reason": reason,
                        "resumes_at": _iso(until),
                        "sessions_total": switch.sessions_total,
                        "sessions_migrated": switch.sessions_migrated,
                        "sessions_failed": switch.sessions_failed,
                        "sessions_waiting": int(waiting),
                        "delayed_at": _iso(datetime.now(UTC)),
                    },
                    tutor_id=str(switch.tutor_id),
                    source=SOURCE,
                    topics=self.topics,
                    # Once per new resume time: the conditional UPDATE above (a
                    # row lock) lets only one executor through.
                    event_id=uuid.uuid4(),
                )
            )
        )

    async def _announce_usage_limits(self, conn: AsyncConnection, *, switch_id: str) -> None:
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
                    "WHERE id = :id AND state IN ('PLANNING', 'MIGRATING') "
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
                    f"WHERE switch_id = :id AND state IN {_UNSETTLED}"
                ),
                {"id": switch_id},
            )
        ).scalar_one()
        await conn.execute(
            insert(Outbox).values(
                **events.outbox_row(
                    "switch.delayed",
                    {
                        "switch_id": switch_id,
                        "tutor_id": str(switch.tutor_id),
                        "provider": switch.to_provider,
                        "reason": "usage_limits",
                        "sessions_total": switch.sessions_total,
                        "sessions_migrated": switch.sessions_migrated,
                        "sessions_failed": switch.sessions_failed,
                        "sessions_waiting": int(waiting),
                        "delayed_at": _iso(datetime.now(UTC)),
                    },
                    tutor_id=str(switch.tutor_id),
                    source=SOURCE,
                    topics=self.topics,
                    event_id=uuid.uuid4(),
                )
            )
        )

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
                            "UPDATE session_migrations m SET state = 'MEETING_CREATED', "
                            "new_meeting_external_id = i.mid, new_join_url = i.url, "
                            "updated_at = now() FROM unnest(CAST(:ids AS bigint[]), "
                            "CAST(:mids AS text[]), CAST(:urls AS text[])) AS i(id, mid, url) "
                            "WHERE m.id = i.id AND m.state = 'PENDING' RETURNING m.id"
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
        current), its row, its switch's counters and its `session.migrated`
        outbox row -- one statement -- then the check whether the switches are
        complete. A row whose session may no longer move is settled SKIPPED.
        No two rows of one session may be in one call.
        """
        now = datetime.now(UTC)
        outbox = [
            events.outbox_row(
                "session.migrated",
                {
                    "switch_id": row.switch_id,
                    "tutor_id": row.tutor_id,
                    "session_id": row.session_id,
                    "student_id": row.student_id,
                    "booking_id": row.booking_id,
                    "scheduled_start_at": _iso(row.scheduled_start_at),
                    "kind": row.kind,
                    "provider": row.to_provider,
                    "meeting_external_id": meeting.external_id,
                    "join_url": meeting.join_url,
                    "previous_provider": row.from_provider,
                    "previous_meeting_external_id": row.previous_meeting_external_id,
                    "migrated_at": _iso(now),
                },
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
                    CAST(:mids AS text[]), CAST(:urls AS text[]), CAST(:event_ids AS uuid[]),
                    CAST(:aggregate_types AS text[]), CAST(:aggregate_ids AS text[]),
                    CAST(:event_types AS text[]), CAST(:topics AS text[]),
                    CAST(:payloads AS jsonb[]), CAST(:headers AS jsonb[]))
                    WITH ORDINALITY AS i(id, sid, switch, from_p, to_p, mid, url, event_id,
                        aggregate_type, aggregate_id, event_type, topic, payload, headers, ord)
            ), moved AS (
                UPDATE sessions s SET provider = i.to_p, meeting_external_id = i.mid,
                    join_url = i.url, meeting_created_at = :now, version = s.version + 1,
                    updated_at = :now
                FROM input i
                JOIN provider_switches p ON p.id = i.switch
                JOIN tutor_video_provider_connections c ON c.tutor_id = p.tutor_id
                WHERE s.id = i.sid
                  AND s.status IN {_ELIGIBLE} AND s.scheduled_start_at >= :now
                  AND s.provider IS NOT DISTINCT FROM i.from_p
                  AND p.state IN ('PLANNING', 'MIGRATING')
                  AND c.generation = p.generation AND c.provider = p.to_provider
                RETURNING i.id
            ), settled AS (
                UPDATE session_migrations m SET
                    state = CASE WHEN m.id IN (SELECT id FROM moved) THEN 'MIGRATED'
                                 ELSE 'SKIPPED' END,
                    last_error = CASE WHEN m.id IN (SELECT id FROM moved) THEN NULL
                                      ELSE 'no longer eligible' END,
                    new_meeting_external_id = coalesce(i.mid, m.new_meeting_external_id),
                    new_join_url = coalesce(i.url, m.new_join_url), updated_at = now()
                FROM input i
                WHERE m.id = i.id AND m.state IN {_UNSETTLED}
                RETURNING m.switch_id, m.state
            ), counted AS (
                UPDATE provider_switches p SET
                    sessions_migrated = p.sessions_migrated + n.migrated,
                    sessions_total = greatest(p.sessions_total - n.skipped, 0)
                FROM (
                    SELECT switch_id, count(*) FILTER (WHERE state = 'MIGRATED') AS migrated,
                        count(*) FILTER (WHERE state = 'SKIPPED') AS skipped
                    FROM settled GROUP BY switch_id
                ) n
                WHERE p.id = n.switch_id
                RETURNING 1
            ), published AS (
                INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic,
                    payload, headers)
                SELECT i.event_id, i.aggregate_type, i.aggregate_id, i.event_type, i.topic,
                    i.payload, i.headers
                FROM input i WHERE i.id IN (SELECT id FROM moved)
                ORDER BY i.ord
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
            "event_ids": [str(e["event_id"]) for e in outbox],
            "aggregate_types": [e["aggregate_type"] for e in outbox],
            "aggregate_ids": [str(e["aggregate_id"]) for e in outbox],
            "event_types": [e["event_type"] for e in outbox],
            "topics": [e["topic"] for e in outbox],
            "payloads": [json.dumps(e["payload"]) for e in outbox],
            "headers": [json.dumps(e["headers"]) for e in outbox],
        }
        async with self.engine.begin() as conn:
            moved = set((await conn.execute(text(sql), params)).scalars())
            await self._complete_settled(conn, sorted({row.switch_id for row, _ in done}))
        return [row.id in moved for row, _ in done]

    async def skip(self, row: ClaimedRow, *, why: str) -> None:
        """Settle a row without moving its session (cancelled, started, superseded)."""
        async with self.engine.begin() as conn:
            await self._settle(conn, row, state="SKIPPED", error=why)
            await self._complete_if_settled(conn, row.switch_id)

    async def fail(self, row: ClaimedRow, *, reason: str, detail: str, retryable: bool) -> None:
        """Settle a row as failed and write its `session.failed`."""
        async with self.engine.begin() as conn:
            if await self._settle(conn, row, state="FAILED", error=f"{reason}: {detail}"):
                await conn.execute(
                    insert(Outbox).values(
                        **self._failed_event(
                            row=row, reason=reason, detail=detail, retryable=retryable
                        )
                    )
                )
                await conn.execute(
                    text("UPDATE session_migrations SET retryable = :r WHERE id = :id"),
                    {"r": retryable, "id": row.id},
                )
            await self._complete_if_settled(conn, row.switch_id)

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
                            f"WHERE m.switch_id = :id AND m.state IN {_UNSETTLED} "
                            "ORDER BY m.scheduled_start_at LIMIT :n FOR UPDATE OF m SKIP LOCKED"
                        ),
                        {"id": switch_id, "n": batch},
                    )
                ).all()
                if not rows:
                    await self._complete_if_settled(conn, switch_id)
                    return failed
                ids = [r.id for r in rows]
                await conn.execute(
                    text(
                        "UPDATE session_migrations SET state = 'FAILED', retryable = true, "
                        "last_error = :e, updated_at = now() WHERE id = ANY(:ids)"
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
                await conn.execute(
                    insert(Outbox),
                    [
                        self._failed_event(
                            row=r, reason=reason, detail=detail, retryable=True, attempts=None
                        )
                        for r in rows
                    ],
                )
                await self._complete_if_settled(conn, switch_id)
                failed += len(rows)

    async def retry_later(
        self, row: ClaimedRow, *, at: datetime, error: str, counts_as_attempt: bool
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE session_migrations SET next_attempt_at = :at, last_error = :e, "
                    "attempts = attempts - :undo, updated_at = now() "
                    f"WHERE id = :id AND state IN {_UNSETTLED}"
                ),
                {"id": row.id, "at": at, "e": error, "undo": 0 if counts_as_attempt else 1},
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
        async with self.engine.begin() as conn:
            switch = (
                await conn.execute(
                    text(
                        "UPDATE session_migrations SET next_attempt_at = "
                        "greatest(next_attempt_at, :u) "
                        f"WHERE switch_id = :id AND state IN {_UNSETTLED} "
                        "RETURNING tutor_id, to_provider"
                    ),
                    {"id": switch_id, "u": until},
                )
            ).first()
            if usage_limited and switch is not None:
                await self._announce_usage_limits(conn, switch_id=switch_id)
            if not quota or switch is None:
                return
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
            await self._announce_wait(conn, switch_id=switch_id, until=until, reason="daily_quota")

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
                    f"WHERE id = :id AND state IN {_UNSETTLED} RETURNING id"
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
        counter = {
            "MIGRATED": "sessions_migrated = sessions_migrated + 1",
            "FAILED": "sessions_failed = sessions_failed + 1",
            "SKIPPED": "sessions_total = greatest(sessions_total - 1, 0)",
        }[state]
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
        return events.outbox_row(
            "session.failed",
            {
                "switch_id": str(row.switch_id),
                "tutor_id": str(row.tutor_id),
                "session_id": str(row.session_id),
                "student_id": str(row.student_id),
                "booking_id": str(row.booking_id) if row.booking_id else None,
                "scheduled_start_at": _iso(row.scheduled_start_at),
                "kind": row.kind,
                "provider": row.to_provider,
                "reason": reason,
                "detail": detail[:2000],
                "retryable": retryable,
                "attempts": max(int(row.attempts), 1),
                "failed_at": _iso(datetime.now(UTC)),
            },
            tutor_id=str(row.tutor_id),
            source=SOURCE,
            topics=self.topics,
            event_id=uuid.uuid4(),
        )


def quota_window(provider: str, now: datetime) -> tuple[date, datetime]:
    """The provider's quota day at `now` and when it resets (Zoom counts UTC days)."""
    day = now.astimezone(UTC).date()
    resets_at = datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)
    return day, resets_at


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
