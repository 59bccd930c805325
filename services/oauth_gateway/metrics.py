"""The gateway's counters and latency histogram (prometheus_client), and the ASGI
middleware that times every request."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core import metrics as m


class GatewayMetrics:
    """Callback outcomes, switches, bookings and request latencies (prometheus_client series).

    One gateway app's own registry (one per process in production; tests build
    several). `/metrics` adds the process-wide series (build info, provider calls);
    under several uvicorn workers each worker writes its figures to files and any
    worker's `/metrics` merges all of them.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.callbacks = Counter(
            "relink_gateway_oauth_callbacks",
            "OAuth callbacks by provider and outcome (switched, bad_state, ...).",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "relink_gateway_webhooks",
            "Provider notifications by provider and outcome (disconnected, bad_signature, ...).",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.bookings = Counter(
            "relink_gateway_bookings",
            "Bookings by outcome (accepted, conflict, ...).",
            ["outcome"],
            registry=self.registry,
        )
        self.requests = Counter(
            "relink_gateway_http_requests",
            "HTTP requests by route template and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "relink_gateway_http_request_seconds",
            "HTTP request duration by route template.",
            ["route"],
            buckets=m.HTTP_BUCKETS,
            registry=self.registry,
        )

    def callback(self, *, provider: str, outcome: str) -> None:
        """Count one OAuth callback by provider and outcome (switched, bad_state, ...)."""
        self.callbacks.labels(provider=provider, outcome=outcome).inc()

    def webhook(self, *, provider: str, outcome: str) -> None:
        """Count one provider notification by outcome (disconnected, bad_signature, stale, ...)."""
        self.webhooks.labels(provider=provider, outcome=outcome.split(":")[0]).inc()

    def booking(self, *, outcome: str) -> None:
        self.bookings.labels(outcome=outcome).inc()

    def request(self, *, route: str, status: int, seconds: float) -> None:
        """Record one HTTP request's status and duration under its route template."""
        self.requests.labels(route=route, status=str(status)).inc()
        self.request_seconds.labels(route=route).observe(seconds)

    def render(self) -> bytes:
        """Prometheus text exposition format 0.0.4 (every worker's figures)."""
        if m.multiprocess_dir():
            return m.render()  # the workers' files hold these series too
        return m.render(self.registry)


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
