"""PostgreSQL adapters of the migrator, one module per thing they hold.

- `plan`: switches, their plan (the rows), supersession and retries;
- `claim`: the executor's leased claims and each provider's daily quota;
- `outcome`: how a claimed row ends, in one transaction with its event;
- `token_slots`: the connection's tokens (current and kept previous);
- `rollback`: the rollback's and the cleanup's transactions.

`MigrationStore` is a thin facade composing the first four for the callers
that want one object (executor, service); it holds no query of its own.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from services.core.settings import CommonSettings
from services.core.tokens import TokenCipher
from services.migrator.store.claim import ClaimedRow, ClaimStore, quota_window
from services.migrator.store.common import SOURCE, make_async_engine, switch_ref
from services.migrator.store.outcome import OutcomeStore
from services.migrator.store.plan import PlanBatch, PlanStore
from services.migrator.store.token_slots import ConnectionState, SlotTokens, TokenSlots

__all__ = [
    "SOURCE",
    "ClaimStore",
    "ClaimedRow",
    "ConnectionState",
    "MigrationStore",
    "OutcomeStore",
    "PlanBatch",
    "PlanStore",
    "SlotTokens",
    "TokenSlots",
    "make_async_engine",
    "quota_window",
    "switch_ref",
]


class MigrationStore:
    """The migrator's store parts on one async engine, behind one object."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        topics: CommonSettings,
        cipher: TokenCipher,
        daily_caps: Mapping[str, int] | None = None,
    ) -> None:
        self.engine = engine
        self.plans = PlanStore(engine)
        self.claims = ClaimStore(engine, topics=topics, daily_caps=daily_caps)
        self.outcomes = OutcomeStore(engine, topics=topics)
        self.tokens = TokenSlots(engine, cipher=cipher)
        # The plan.
        self.switch = self.plans.switch
        self.mark_superseded = self.plans.mark_superseded
        self.start_planning = self.plans.start_planning
        self.plan_batch = self.plans.plan_batch
        self.finish_planning = self.plans.finish_planning
        self.sweepable_switches = self.plans.sweepable_switches
        self.auto_retry = self.plans.auto_retry
        self.request_retry = self.plans.request_retry
        # The claims and the daily quota.
        self.active_tutors = self.claims.active_tutors
        self.claim = self.claims.claim
        self.pause_switch = self.claims.pause_switch
        # The outcomes.
        self.record_meetings = self.outcomes.record_meetings
        self.complete_migrations = self.outcomes.complete_migrations
        self.skip = self.outcomes.skip
        self.fail = self.outcomes.fail
        self.fail_remaining = self.outcomes.fail_remaining
        self.retry_later = self.outcomes.retry_later
        # The tokens.
        self.connection = self.tokens.connection
        self.tokens_of = self.tokens.tokens_of
        self.tokens_at = self.tokens.tokens_at
        self.save_tokens = self.tokens.save_tokens
        self.save_slot_tokens = self.tokens.save_slot_tokens

    async def close(self) -> None:
        await self.engine.dispose()
