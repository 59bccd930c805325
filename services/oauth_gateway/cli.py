"""`relink gateway`."""

from __future__ import annotations


def gateway_command() -> None:
    """Serve the OAuth gateway with uvicorn (settings: RELINK_GATEWAY_*, see its README)."""
    import uvicorn

    from services.core.db.token_keys import check_token_keys_at
    from services.core.logs import configure_logging
    from services.oauth_gateway.settings import GatewaySettings
    from services.providers import ProviderSettings

    settings = GatewaySettings()
    configure_logging(settings.log_level)
    # Settings first (a wrong endpoint or secret exits naming it), then the database.
    ProviderSettings()
    check_token_keys_at(
        settings.sync_database_url, settings.token_cipher().key_ids, process="relink gateway"
    )
    uvicorn.run(
        "services.oauth_gateway.entrypoint:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        access_log=settings.access_log,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )
