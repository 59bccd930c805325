"""A tiny `/metrics` HTTP endpoint (stdlib server in a daemon thread)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from services.relay.metrics import RelayMetrics


def serve_metrics(metrics: RelayMetrics, *, host: str, port: int) -> ThreadingHTTPServer:
    """Start serving `GET /metrics`; return the server (call `.shutdown()` to stop)."""

    class MetricsRequest(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # scrapes every few seconds would drown the relay's own log
            return

    server = ThreadingHTTPServer((host, port), MetricsRequest)
    threading.Thread(target=server.serve_forever, name="relay-metrics", daemon=True).start()
    return server
