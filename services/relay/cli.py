"""`relink relay`: run the outbox relay until SIGTERM / Ctrl-C."""

from __future__ import annotations

import logging
import signal
import threading

import typer


def relay(
    until_idle: bool = typer.Option(
        False, "--until-idle", help="exit once no unpublished row is left (benchmarks, scripts)"
    ),
) -> None:
    """Publish outbox rows to Kafka (settings: RELINK_RELAY_*, see services/relay/README.md)."""
    from services.relay.bootstrap import build_relay
    from services.relay.metrics_http import serve_metrics
    from services.relay.settings import RelaySettings

    settings = RelaySettings()
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    relay_process = build_relay(settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = None
    if settings.metrics_port:
        server = serve_metrics(
            relay_process.metrics, host=settings.metrics_host, port=settings.metrics_port
        )
    try:
        relay_process.run(stop=stop, until_idle=until_idle)
    finally:
        if server is not None:
            server.shutdown()
        relay_process.close()
