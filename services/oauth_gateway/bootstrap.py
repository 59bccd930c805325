"""The composition root: the one place that builds the gateway's use cases and adapters."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Engine

from services.core.db.engine import make_engine, make_session_factory
from services.core.db.holds import SyncHolds
from services.core.errors import ConfigurationError
from services.oauth_gateway.adapters.db import GatewayStore
from services.oauth_gateway.adapters.db.platform import PlatformStore
from services.oauth_gateway.metrics import GatewayMetrics
from services.oauth_gateway.settings import GatewaySettings
from services.oauth_gateway.usecases.platform import Platform
from services.oauth_gateway.usecases.tutors import Gateway
from services.providers import ProviderClient, ProviderSettings, build_client

PROVIDERS = ("zoom", "google_meet")


def build_gateway(
    settings: GatewaySettings,
    *,
    provider_settings: ProviderSettings | None = None,
    clients: Mapping[str, ProviderClient] | None = None,
    engine: Engine | None = None,
) -> Gateway:
    """The gateway's use cases wired to PostgreSQL and the provider clients."""
    provider_settings = provider_settings or ProviderSettings()
    check_redirect_uris(settings, provider_settings)
    engine = engine or make_engine(settings.sync_database_url, pool_size=settings.db_pool_size)
    store = GatewayStore(
        make_session_factory(engine), cipher=settings.token_cipher(), topics=settings
    )
    if clients is None:
        # A 429's Retry-After is shared with the migrators through PostgreSQL.
        holds = SyncHolds(engine)
        clients = {
            p: build_client(p, settings=provider_settings, holds=holds)  # type: ignore[arg-type]
            for p in PROVIDERS
        }
    return Gateway(settings=settings, store=store, clients=clients, metrics=GatewayMetrics())


def build_platform(gateway: Gateway) -> Platform:
    """The service API's use cases, on the gateway's database and bookings."""
    return Platform(gateway, PlatformStore(gateway.store.session_factory, topics=gateway.settings))


def check_redirect_uris(settings: GatewaySettings, providers: ProviderSettings) -> None:
    """The redirect URIs registered at the providers must be exactly our callbacks."""
    configured = {"zoom": providers.zoom_redirect_uri, "google_meet": providers.google_redirect_uri}
    for provider, uri in configured.items():
        if uri != settings.redirect_uri(provider):
            raise ConfigurationError(
                f"the {provider} redirect URI {uri!r} is not this gateway's callback "
                f"{settings.redirect_uri(provider)!r}; set RELINK_GATEWAY_PUBLIC_BASE_URL "
                "or the provider's RELINK_*_REDIRECT_URI so they agree"
            )
