"""The gateway's counters and latency histogram (prometheus_client), and the ASGI
middleware that times every request."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core import metrics as m


class GatewayMetrics:
    """Callback outcomes, switches, bookings and request latencies (prometheus_client series).

    The series are process-wide (services/core/metrics.py); under several uvicorn
    workers each writes its own files and `/metrics` merges them.
    """

    def callback(self, *, provider: str, outcome: str) -> None:
        """Count one OAuth callback by provider and outcome (switched, bad_state, ...)."""
        m.GATEWAY_CALLBACKS.labels(provider=provider, outcome=outcome).inc()

    def webhook(self, *, provider: str, outcome: str) -> None:
        """Count one provider notification by outcome (disconnected, bad_signature, stale, ...)."""
        m.GATEWAY_WEBHOOKS.labels(provider=provider, outcome=outcome.split(":")[0]).inc()

    def booking(self, *, outcome: str) -> None:
        m.GATEWAY_BOOKINGS.labels(outcome=outcome).inc()

    def request(self, *, route: str, status: int, seconds: float) -> None:
        """Record one HTTP request's status and duration under its route template."""
        m.GATEWAY_REQUESTS.labels(route=route, status=str(status)).inc()
        m.GATEWAY_REQUEST_SECONDS.labels(route=route).observe(seconds)

    def render(self) -> bytes:
        """Prometheus text exposition format 0.0.4 (every worker's figures)."""
        return m.render()


class RequestMetrics:
    """Counts requests and their durations by route template (pure ASGI, no body buffering)."""

    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.request(route=route, status=status, seconds=time.perf_counter() - started)
