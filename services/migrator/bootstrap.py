"""Composes a migrator from its settings (the one place that does)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from services.core import tracing
from services.core.backoff import Backoff, RetryPolicy
from services.core.db.holds import AsyncHolds
from services.migrator.adapters.db.claim import ClaimStore
from services.migrator.adapters.db.common import make_async_engine
from services.migrator.adapters.db.outcome import OutcomeStore
from services.migrator.adapters.db.plan import PlanStore
from services.migrator.adapters.db.rollback import RollbackStore
from services.migrator.adapters.db.token_slots import TokenSlots
from services.migrator.domain import RowRetry
from services.migrator.settings import MigratorSettings
from services.migrator.usecases.connections import ConnectionCache
from services.migrator.usecases.execute import Executor
from services.migrator.usecases.migrate import MigrationService
from services.migrator.usecases.rollback import RollbackService
from services.providers import ProviderClient, ProviderSettings, build_client


@dataclass
class Migrator:
    """Everything one migrator process runs on."""

    settings: MigratorSettings
    engine: AsyncEngine
    service: MigrationService
    executor: Executor
    rollbacks: RollbackService
    clients: dict[str, ProviderClient]

    async def close(self) -> None:
        await self.executor.stop()
        for client in self.clients.values():
            await client.aclose()
        await self.engine.dispose()


def build_migrator(
    settings: MigratorSettings | None = None,
    *,
    provider_settings: ProviderSettings | None = None,
) -> Migrator:
    """A migrator wired to PostgreSQL and the providers as the settings say."""
    settings = settings or MigratorSettings()
    provider_settings = provider_settings or ProviderSettings()
    engine = make_async_engine(settings.database_url, pool_size=settings.db_pool_size)
    plans = PlanStore(engine, topics=settings)
    tokens = TokenSlots(engine, cipher=settings.token_cipher())
    # A 429's Retry-After is shared with the other processes through PostgreSQL.
    holds = AsyncHolds(engine)
    clients = {
        name: build_client(name, settings=provider_settings, holds=holds)
        for name in ("zoom", "google_meet")
    }
    connections = ConnectionCache(tokens=tokens, clients=clients)
    executor = Executor(
        claims=ClaimStore(
            engine, topics=settings, daily_caps={"zoom": settings.zoom_daily_creates}
        ),
        outcomes=OutcomeStore(engine, topics=settings),
        connections=connections,
        policy=RowRetry(
            transient=RetryPolicy(
                max_attempts=settings.max_attempts,
                backoff=Backoff(base_s=settings.backoff_base_s, cap_s=settings.backoff_cap_s),
            ),
            usage=Backoff(
                base_s=settings.usage_limit_backoff_base_s,
                cap_s=settings.usage_limit_backoff_cap_s,
                jitter="equal",
            ),
        ),
        concurrency=settings.concurrency,
        tutor_concurrency=settings.tutor_concurrency,
        poll_interval_s=settings.poll_interval_s,
        lease=timedelta(seconds=settings.claim_lease_s),
        switch_trace=lambda switch_id: tracing.load_switch_async(engine, switch_id),
    )
    rollbacks = RollbackService(
        store=RollbackStore(engine, topics=settings, plans=plans),
        connections=connections,
        batch_size=settings.plan_batch_size,
        delete_concurrency=settings.tutor_concurrency,
        cancelled_backoff=Backoff(
            base_s=settings.backoff_base_s, cap_s=settings.backoff_cap_s, jitter="equal"
        ),
    )
    service = MigrationService(
        plans=plans,
        tokens=tokens,
        plan_batch_size=settings.plan_batch_size,
        wake=executor.wake,
        rollbacks=rollbacks,
    )
    return Migrator(
        settings=settings,
        engine=engine,
        service=service,
        executor=executor,
        rollbacks=rollbacks,
        clients=clients,
    )
