"""The one order in which any transaction locks a tutor's switch tables.

Every transaction that locks more than one of these rows (`SELECT … FOR
UPDATE`, or an `UPDATE`, which locks the row it changes) takes them in this
order, and never goes back to an earlier table once it holds a later one:

1. `tutor_video_provider_connections`: the tutor's connection row (the
   per-tutor lock; the gateway's `lock_connection`);
2. `switch_requests`: the tutor's request (the gateway's rollback request
   locks it `FOR NO KEY UPDATE`, which leaves the `FOR KEY SHARE` lock the
   migrator's insert of the progress row takes through its foreign key free);
3. `session_migrations`: the rows of a switch (the executor claims and
   settles them, the rollback restores them);
4. `provider_switches`: the switch's progress row (its state and counters).

Two transactions taking the same two rows in opposite orders deadlock:
PostgreSQL aborts one ("deadlock detected") and the gateway answered 503. The
gateway's rollback request locks the connection then the request; the
migrator's rollback completion (state `ROLLED_BACK`, forgetting the kept
tokens on the connection) used to update the switch first and then the
connection. It now locks the connection first as well (`LOCK_CONNECTION_SQL`).
"""

from __future__ import annotations

LOCK_ORDER: tuple[str, ...] = (
    "tutor_video_provider_connections",
    "switch_requests",
    "session_migrations",
    "provider_switches",
)

# Step 1 of LOCK_ORDER for code that speaks SQL text (the migrator's adapters).
LOCK_CONNECTION_SQL = (
    "SELECT provider, generation FROM tutor_video_provider_connections "
    "WHERE tutor_id = :tutor_id FOR UPDATE"
)
