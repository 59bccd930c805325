"""The gateway's counters and latency histogram, rendered as Prometheus text, and the ASGI
middleware that times every request."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Seconds; the callback spends most of its time on two provider round trips.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class GatewayMetrics:
    """Callback outcomes, switches, bookings and request latencies of one process."""

    callbacks: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    bookings: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    webhooks: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    requests: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    latency_counts: dict[str, list[int]] = field(default_factory=dict)
    latency_sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def callback(self, *, provider: str, outcome: str) -> None:
        """Count one OAuth callback by provider and outcome (switched, bad_state, ...)."""
        with self._lock:
            self.callbacks[(provider, outcome)] += 1

    def webhook(self, *, provider: str, outcome: str) -> None:
        """Count one provider notification by outcome (disconnected, bad_signature, stale, ...)."""
        with self._lock:
            self.webhooks[(provider, outcome.split(":")[0])] += 1

    def booking(self, *, outcome: str) -> None:
        with self._lock:
            self.bookings[outcome] += 1

    def request(self, *, route: str, status: int, seconds: float) -> None:
        """Record one HTTP request's status and duration under its route template."""
        with self._lock:
            self.requests[(route, status)] += 1
            counts = self.latency_counts.setdefault(route, [0] * (len(LATENCY_BUCKETS) + 1))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self.latency_sums[route] += seconds

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        with self._lock:
            out = [
                "# HELP relink_gateway_oauth_callbacks_total OAuth callbacks by outcome.",
                "# TYPE relink_gateway_oauth_callbacks_total counter",
            ]
            for (provider, outcome), n in sorted(self.callbacks.items()):
                out.append(
                    f'relink_gateway_oauth_callbacks_total{{provider="{provider}",'
                    f'outcome="{outcome}"}} {n}'
                )
            out += [
                "# HELP relink_gateway_webhooks_total Provider notifications by outcome.",
                "# TYPE relink_gateway_webhooks_total counter",
            ]
            out += [
                f'relink_gateway_webhooks_total{{provider="{p}",outcome="{o}"}} {n}'
                for (p, o), n in sorted(self.webhooks.items())
            ]
            out += [
                "# HELP relink_gateway_bookings_total Bookings accepted, by outcome.",
                "# TYPE relink_gateway_bookings_total counter",
            ]
            out += [
                f'relink_gateway_bookings_total{{outcome="{k}"}} {n}'
                for k, n in sorted(self.bookings.items())
            ]
            out += [
                "# HELP relink_gateway_http_requests_total HTTP requests by route and status.",
                "# TYPE relink_gateway_http_requests_total counter",
            ]
            out += [
                f'relink_gateway_http_requests_total{{route="{r}",status="{s}"}} {n}'
                for (r, s), n in sorted(self.requests.items())
            ]
            out += [
                "# HELP relink_gateway_http_request_seconds HTTP request duration.",
                "# TYPE relink_gateway_http_request_seconds histogram",
            ]
            for route, counts in sorted(self.latency_counts.items()):
                bucket = f'relink_gateway_http_request_seconds_bucket{{route="{route}"'
                for bound, n in zip(LATENCY_BUCKETS, counts, strict=False):
                    out.append(f'{bucket},le="{bound}"}} {n}')
                out.append(f'{bucket},le="+Inf"}} {counts[-1]}')
                out.append(
                    f'relink_gateway_http_request_seconds_sum{{route="{route}"}} '
                    f"{self.latency_sums[route]:.6f}"
                )
                out.append(
                    f'relink_gateway_http_request_seconds_count{{route="{route}"}} {counts[-1]}'
                )
        return "\n".join(out) + "\n"


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
