"""Composes a migrator from its settings (the one place that does)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from services.core.backoff import Backoff, RetryPolicy
from services.migrator.domain import RowRetry
from services.migrator.executor import ConnectionCache, Executor
from services.migrator.rollback import RollbackService
from services.migrator.service import MigrationService
from services.migrator.settings import MigratorSettings
from services.migrator.store import MigrationStore, make_async_engine
from services.migrator.store.rollback import RollbackStore
from services.providers import ProviderClient, ProviderSettings, build_client


@dataclass
class Migrator:
    """Everything one migrator process runs on."""

    settings: MigratorSettings
    store: MigrationStore
    service: MigrationService
    executor: Executor
    rollbacks: RollbackService
    clients: dict[str, ProviderClient]

    async def close(self) -> None:
        await self.executor.stop()
        for client in self.clients.values():
            await client.aclose()
        await self.store.close()


def build_migrator(
    settings: MigratorSettings | None = None,
    *,
    provider_settings: ProviderSettings | None = None,
) -> Migrator:
    """A migrator wired to PostgreSQL and the providers as the settings say."""
    settings = settings or MigratorSettings()
    provider_settings = provider_settings or ProviderSettings()
    store = MigrationStore(
        make_async_engine(settings.database_url, pool_size=settings.db_pool_size),
        topics=settings,
        cipher=settings.token_cipher(),
        daily_caps={"zoom": settings.zoom_daily_creates},
    )
    clients = {
        name: build_client(name, settings=provider_settings) for name in ("zoom", "google_meet")
    }
    executor = Executor(
        store=store,
        clients=clients,
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
    )
    rollbacks = RollbackService(
        store=RollbackStore(store.engine, topics=settings, plans=store.plans),
        connections=ConnectionCache(store=store, clients=clients),
        batch_size=settings.plan_batch_size,
        delete_concurrency=settings.tutor_concurrency,
    )
    service = MigrationService(
        store=store,
        plan_batch_size=settings.plan_batch_size,
        wake=executor.wake,
        rollbacks=rollbacks,
    )
    return Migrator(
        settings=settings,
        store=store,
        service=service,
        executor=executor,
        rollbacks=rollbacks,
        clients=clients,
    )
