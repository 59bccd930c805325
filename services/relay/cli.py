"""`relink relay`: run the outbox relay until SIGTERM / Ctrl-C."""

from __future__ import annotations

import signal
import threading

from services.core.cli import IDLE_SECONDS, UNTIL_IDLE
from services.core.logs import configure_logging
from services.core.tracing import configure_tracing


def relay(
    until_idle: bool = UNTIL_IDLE,
    idle_seconds: float = IDLE_SECONDS,
) -> None:
    """Publish outbox rows to Kafka (settings: RELINK_RELAY_*, see services/relay/README.md)."""
    from services.core.metrics import process_started
    from services.relay.bootstrap import build_relay
    from services.relay.metrics import serve_metrics
    from services.relay.settings import RelaySettings

    settings = RelaySettings()
    configure_logging(settings.log_level)
    configure_tracing("relay")
    relay_process = build_relay(settings)
    process_started("relay")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = None
    if settings.metrics_port:
        server = serve_metrics(
            relay_process.metrics, host=settings.metrics_host, port=settings.metrics_port
        )
    try:
        relay_process.run(stop=stop, until_idle_s=idle_seconds if until_idle else None)
    finally:
        if server is not None:
            server.shutdown()
        relay_process.close()
