"""What the migrator's store parts share: the engine, the SQL state lists, switch completion
and the `switch.settled` event every transaction that settles a switch appends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.core import outbox
from services.core.db.errors import translate_errors
from services.core.db.models import MigrationState, SwitchState
from services.core.events import Process, TopicNames
from services.core.messages import SwitchSettled, message_row
from services.core.settings import normalize_database_url
from services.core.switching import SETTLED, sources_of, sql_state, sql_states
from services.migrator.domain import (
    ELIGIBLE_STATUSES,
    UNSETTLED_STATES,
    SwitchRef,
    final_switch_state,
)

# `ce_source` of the migrator's events: `<RELINK_EVENTS_SOURCE_BASE>/migrator`.
SOURCE = Process("migrator")


def sql_list(values: Sequence[str]) -> str:
    """A parenthesised SQL literal list, `('A', 'B')`, of fixed enum values (never user input)."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# The one SQL spelling of each of the domain's state lists, used by every store part.
UNSETTLED_SQL = sql_list(UNSETTLED_STATES)
ELIGIBLE_SQL = sql_list(ELIGIBLE_STATUSES)


# The tutor asked to roll the switch `p` back (the gateway's request row): the
# migrator's progress row goes ROLLING_BACK, and nothing settles it otherwise.
ROLLBACK_REQUESTED_SQL = (
    "EXISTS (SELECT 1 FROM switch_requests r WHERE r.id = p.id "
    "AND r.rollback_requested_at IS NOT NULL)"
)

# The migrator's progress row of a switch, made from the tutor's request (the
# gateway's `switch_requests` row, same id) the first time the migrator meets
# the switch, then ROLLING_BACK at once when the tutor has asked to roll it
# back. The migrator is the only writer of `provider_switches` (issue 17).
ADOPT_SQL = f"""
    WITH made AS (
        INSERT INTO provider_switches (id, tutor_id, from_provider, to_provider, generation,
                                       state, created_at, rollback_deadline)
        SELECT r.id, r.tutor_id, r.from_provider, r.to_provider, r.generation,
               {sql_state(SwitchState.PENDING)}, r.requested_at, r.rollback_deadline
        FROM switch_requests r WHERE r.id = :id
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    )
    SELECT count(*) FROM made
"""
ABSORB_ROLLBACK_SQL = f"""
    UPDATE provider_switches p SET state = {sql_state(SwitchState.ROLLING_BACK)}
    WHERE p.id = :id AND p.state IN {sql_states(sources_of(SwitchState.ROLLING_BACK))}
      AND {ROLLBACK_REQUESTED_SQL}
"""


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
    engine = create_async_engine(
        normalize_database_url(url),
        pool_size=pool_size,
        # No overflow: connections beyond the pool were opened and closed at
        # every burst (one PostgreSQL backend forked per ~5 sessions migrated);
        # a task now waits for a pooled connection instead.
        max_overflow=0,
        pool_pre_ping=True,
    )
    translate_errors(engine.sync_engine)  # StoreUnavailable, RetryableConflict
    return engine


async def complete_if_settled(
    conn: AsyncConnection,
    switch_id: str,
    *,
    topics: TopicNames,
    from_states: Sequence[str] = (SwitchState.MIGRATING,),
) -> list[dict[str, Any]]:
    """`complete_settled` for one switch: its `switch.settled` outbox row if it settled now."""
    return await complete_and_report(conn, [switch_id], topics=topics, from_states=from_states)


async def complete_and_report(
    conn: AsyncConnection,
    switch_ids: Sequence[str],
    *,
    topics: TopicNames,
    from_states: Sequence[str] = (SwitchState.MIGRATING,),
) -> list[dict[str, Any]]:
    """Settle each of these switches with nothing left unsettled; the `switch.settled` outbox
    rows of those that settled now, for the caller to append as its transaction's last write."""
    done = await complete_settled(conn, switch_ids, from_states=from_states)
    return await settled_events(conn, list(done), topics=topics)


async def complete_settled(
    conn: AsyncConnection,
    switch_ids: Sequence[str],
    *,
    from_states: Sequence[str] = (SwitchState.MIGRATING,),
) -> dict[str, str]:
    """Settle each of these switches with nothing left unsettled; their new states.

    The final state is true to what happened: `SUPERSEDED` when the tutor's
    connection has a newer generation (a newer switch or a rollback replaced
    this one before its last row settled: those rows were skipped, not
    moved), else `COMPLETED_WITH_FAILURES` or `COMPLETED`. Without the first
    case a switch overtaken before the migrator saw the newer one ended
    `COMPLETED 0/0`, and its tutor was emailed that it was done.
    """
    superseded = SwitchState.SUPERSEDED.value
    # Decided under the tutors' outbox locks, after their switches' rows: the
    # gateway writes a newer switch (its generation) and its outbox row under
    # the same lock, so this statement sees every switch committed before this
    # one's `switch.settled` draws its id, and any later one commits after it.
    # Read without the lock, a switch replaced a moment before ended COMPLETED
    # though its replacement's event came first (relink soak, 1 in 1000).
    tutors = (
        await conn.execute(
            text(
                "SELECT tutor_id FROM provider_switches WHERE id = ANY(CAST(:ids AS uuid[])) "
                "ORDER BY id FOR NO KEY UPDATE"
            ),
            {"ids": list(switch_ids)},
        )
    ).scalars()
    await outbox.lock_tutors_async(conn, list(tutors))
    rows = await conn.execute(
        text(
            "UPDATE provider_switches p SET state = CASE WHEN EXISTS (SELECT 1 FROM "
            "tutor_video_provider_connections c WHERE c.tutor_id = p.tutor_id "
            "AND c.generation > p.generation) "
            f"THEN '{superseded}' WHEN p.sessions_failed > 0 "
            f"THEN '{final_switch_state(failed=1)}' ELSE '{final_switch_state(failed=0)}' "
            "END, completed_at = now(), waiting_until = NULL, waiting_reason = NULL "
            "WHERE p.id = ANY(CAST(:ids AS uuid[])) AND p.state = ANY(:states) "
            f"AND NOT {ROLLBACK_REQUESTED_SQL} "
            "AND NOT EXISTS (SELECT 1 FROM session_migrations m WHERE m.switch_id = p.id "
            f"AND m.state IN {UNSETTLED_SQL}) RETURNING p.id, p.state"
        ),
        {"ids": list(switch_ids), "states": list(from_states)},
    )
    return {str(r.id): r.state for r in rows}


async def settled_events(
    conn: AsyncConnection, switch_ids: Sequence[str], *, topics: TopicNames
) -> list[dict[str, Any]]:
    """The `switch.settled` outbox rows of these switches, as this transaction leaves them.

    Called by every transaction that moves a switch to a settled state
    (completion, partial failure, supersession, the end of a rollback), after
    that update and before its `core.outbox` append, so the event commits with
    the state it reports: the notifier learns of the settlement from it and
    never polls `provider_switches`. A switch not settled is left out.
    """
    if not switch_ids:
        return []
    rows = await conn.execute(
        text(
            "SELECT p.id, p.tutor_id, p.state, p.from_provider, p.to_provider, p.sessions_total, "
            "p.sessions_migrated, p.sessions_failed, now() AS settled_at, "
            "(SELECT count(*) FROM session_migrations m WHERE m.switch_id = p.id "
            f"AND m.state = {sql_state(MigrationState.SKIPPED)}) AS skipped "
            "FROM provider_switches p WHERE p.id = ANY(CAST(:ids AS uuid[])) "
            "AND p.state = ANY(:settled) ORDER BY p.tutor_id, p.created_at, p.id"
        ),
        {"ids": list(switch_ids), "settled": sorted(s.value for s in SETTLED)},
    )
    return [
        message_row(
            SwitchSettled(
                switch_id=str(r.id),
                tutor_id=str(r.tutor_id),
                state=r.state,
                from_provider=r.from_provider,
                to_provider=r.to_provider,
                sessions_total=r.sessions_total,
                sessions_migrated=r.sessions_migrated,
                sessions_failed=r.sessions_failed,
                sessions_skipped=int(r.skipped),
                settled_at=r.settled_at,
            ),
            tutor_id=str(r.tutor_id),
            source=SOURCE,
            topics=topics,
        )
        for r in rows
    ]
