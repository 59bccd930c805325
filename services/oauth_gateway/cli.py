"""`relink gateway`."""

from __future__ import annotations


def gateway_command() -> None:
    """Serve the OAuth gateway with uvicorn (settings: RELINK_GATEWAY_*, see its README)."""
    import logging

    import uvicorn

    from services.oauth_gateway.settings import GatewaySettings

    settings = GatewaySettings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    uvicorn.run(
        "services.oauth_gateway.bootstrap:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        access_log=settings.access_log,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )
