"""What the migrator's store parts share: the engine, the SQL state lists, switch completion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.core.db.errors import translate_errors
from services.core.db.models import SwitchState
from services.core.settings import normalize_database_url
from services.migrator.domain import (
    ELIGIBLE_STATUSES,
    UNSETTLED_STATES,
    SwitchRef,
    final_switch_state,
)

SOURCE = "/relink/migrator"


def sql_list(values: Sequence[str]) -> str:
    """A parenthesised SQL literal list, `('A', 'B')`, of fixed enum values (never user input)."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# The one SQL spelling of each of the domain's state lists, used by every store part.
UNSETTLED_SQL = sql_list(UNSETTLED_STATES)
ELIGIBLE_SQL = sql_list(ELIGIBLE_STATUSES)


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
    conn: AsyncConnection, switch_id: str, *, from_states: Sequence[str] = ("MIGRATING",)
) -> str | None:
    return (await complete_settled(conn, [switch_id], from_states=from_states)).get(switch_id)


async def complete_settled(
    conn: AsyncConnection,
    switch_ids: Sequence[str],
    *,
    from_states: Sequence[str] = ("MIGRATING",),
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
    rows = await conn.execute(
        text(
            "UPDATE provider_switches p SET state = CASE WHEN EXISTS (SELECT 1 FROM "
            "tutor_video_provider_connections c WHERE c.tutor_id = p.tutor_id "
            "AND c.generation > p.generation) "
            f"THEN '{superseded}' WHEN p.sessions_failed > 0 "
            f"THEN '{final_switch_state(failed=1)}' ELSE '{final_switch_state(failed=0)}' "
            "END, completed_at = now(), waiting_until = NULL, waiting_reason = NULL "
            "WHERE p.id = ANY(CAST(:ids AS uuid[])) AND p.state = ANY(:states) "
            "AND NOT EXISTS (SELECT 1 FROM session_migrations m WHERE m.switch_id = p.id "
            f"AND m.state IN {UNSETTLED_SQL}) RETURNING p.id, p.state"
        ),
        {"ids": list(switch_ids), "states": list(from_states)},
    )
    return {str(r.id): r.state for r in rows}
