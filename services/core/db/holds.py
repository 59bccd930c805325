"""The deployment's provider holds in PostgreSQL (`provider_holds`, migration 0010).

A 429's Retry-After is the provider account's, so every process that calls
for that account must honour it: the one that got the 429 writes the hold,
and every call of any process reads it first (`services.providers`'
`SharedHolds`). Times are the database's clock, so processes on different
hosts agree; a hold is never shortened by a later, shorter one.

The migrator reads and writes through its async engine (`AsyncHolds`), the
gateway through its sync engine in a worker thread (`SyncHolds`); both run
the same two statements.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import Connection, Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine

_REMAINING = text(
    "SELECT GREATEST(0, EXTRACT(EPOCH FROM held_until - clock_timestamp()))::float8 "
    "FROM provider_holds WHERE provider = :provider AND account = :account"
)
# Upsert keeping the later time; holds long passed are swept on the way (429s are
# rare, so the sweep costs nothing on the call path and the table stays small).
_HOLD = text(
    "INSERT INTO provider_holds (provider, account, held_until) "
    "VALUES (:provider, :account, clock_timestamp() + make_interval(secs => :wait_s)) "
    "ON CONFLICT (provider, account) DO UPDATE "
    "SET held_until = GREATEST(provider_holds.held_until, EXCLUDED.held_until)"
)
_SWEEP = text("DELETE FROM provider_holds WHERE held_until < clock_timestamp() - interval '1 hour'")


def _params(provider: str, account: str, wait_s: float | None = None) -> dict[str, object]:
    params: dict[str, object] = {"provider": provider, "account": account}
    if wait_s is not None:
        params["wait_s"] = max(0.0, float(wait_s))
    return params


class AsyncHolds:
    """`SharedHolds` on an async engine (the migrator)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def remaining(self, provider: str, account: str) -> float:
        async with self.engine.connect() as conn:
            left = await conn.scalar(_REMAINING, _params(provider, account))
        return float(left or 0.0)

    async def hold(self, provider: str, account: str, wait_s: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(_HOLD, _params(provider, account, wait_s))
            await conn.execute(_SWEEP)


class SyncHolds:
    """`SharedHolds` on a sync engine, run in a worker thread (the gateway)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def remaining(self, provider: str, account: str) -> float:
        return await asyncio.to_thread(self._remaining, provider, account)

    async def hold(self, provider: str, account: str, wait_s: float) -> None:
        await asyncio.to_thread(self._hold, provider, account, wait_s)

    def _remaining(self, provider: str, account: str) -> float:
        with self.engine.connect() as conn:
            left = conn.scalar(_REMAINING, _params(provider, account))
        return float(left or 0.0)

    def _hold(self, provider: str, account: str, wait_s: float) -> None:
        conn: Connection
        with self.engine.begin() as conn:
            conn.execute(_HOLD, _params(provider, account, wait_s))
            conn.execute(_SWEEP)
