"""Provider-shaped error answers and the fault gate every simulated API call passes."""

from __future__ import annotations

import asyncio
import math
import time

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from devtools.provider_sim.state import AccountState, Provider, SimState

# The ASGI scope key holding when a request reached the simulator (`StampArrival`).
ARRIVED = "relink_sim_arrived"
# How many early calls an account remembers by name (all are counted).
EARLY_LOG_MAX = 20


def zoom_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Zoom's error body: `{"code": ..., "message": ...}` (Zoom API "Error codes")."""
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def google_error(
    status: int,
    reason: str,
    message: str,
    *,
    domain: str = "global",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Google's error body (Calendar API guide "Handle API errors")."""
    body = {
        "error": {
            "errors": [{"domain": domain, "reason": reason, "message": message}],
            "code": status,
            "message": message,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def unavailable(provider: Provider) -> JSONResponse:
    if provider == "zoom":
        return zoom_error(503, 503, "Service Unavailable")
    return google_error(503, "backendError", "The service is currently unavailable.")


def server_error(provider: Provider) -> JSONResponse:
    if provider == "zoom":
        return zoom_error(500, 500, "Internal server error")
    return google_error(500, "backendError", "Backend Error")


def throttled(provider: Provider, retry_after_s: float) -> JSONResponse:
    """A per-second/per-minute throttle answer with Retry-After (whole seconds, RFC 9110)."""
    headers = {"Retry-After": str(max(0, math.ceil(retry_after_s)))}
    if provider == "zoom":
        headers |= {"X-RateLimit-Category": "Medium", "X-RateLimit-Type": "QPS"}
        return zoom_error(
            429,
            429,
            "You have reached the maximum per-second rate limit for this API. Try again later.",
            headers,
        )
    return google_error(
        429, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits", headers=headers
    )


def unauthorized(provider: Provider, why: str) -> JSONResponse:
    """An access token refused: Zoom's code 124, Google's authError."""
    if provider == "zoom":
        text = "Access token is expired." if why == "expired" else "Invalid access token."
        return zoom_error(401, 124, text)
    return google_error(401, "authError", "Invalid Credentials")


# A request on another connection that reaches us this soon after a 429 was
# already on its way: the client sent it before it could have read the 429
# (loopback, but a loaded two-core machine delays both event loops).
IN_FLIGHT_S = 0.2


def peer_of(request: Request) -> str:
    """The client's end of the TCP connection: one HTTP/1.1 exchange at a time on it."""
    client = request.scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


def sent_too_early(account: AccountState, *, arrived: float, peer: str) -> bool:
    """A call the client made although the account's Retry-After had not passed.

    Calls arriving inside the wait count, except those already on their way
    when the 429 was given, which no client can call back. On the 429's own
    connection nothing can be (HTTP/1.1 sends the next request only after the
    answer was read), so any later call there counts at once; on another
    connection, one arriving within `IN_FLIGHT_S` is taken to be in flight.
    """
    if not account.limited_at < arrived < account.wait_until:
        return False
    return peer == account.limited_peer or arrived - account.limited_at > IN_FLIGHT_S


class StampArrival:
    """ASGI middleware: note when each request arrived, before anything reads its body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[ARRIVED] = time.monotonic()
        await self.app(scope, receive, send)


async def gate(provider: Provider, request: Request) -> AccountState | JSONResponse:
    """Authenticate the bearer token and apply the faults; the account, or the answer to send."""
    state: SimState = request.app.state.sim
    if state.fault(provider, None, "down"):
        return unavailable(provider)
    header = request.headers.get("authorization", "")
    token = header[7:] if header[:7].lower() == "bearer " else ""
    grant, why = state.bearer(provider, token)
    if grant is None:
        return unauthorized(provider, why)
    email = grant.email
    account = state.account(provider, email)
    account.api_calls += 1
    # When the request reached us (stamped before its body was read, app.py), not
    # when this handler got its turn: two requests sent together are both on
    # their way before the first one's 429 is given.
    arrived = float(request.scope.get(ARRIVED, time.monotonic()))
    if sent_too_early(account, arrived=arrived, peer=peer_of(request)):
        account.early_calls += 1
        if len(account.early_call_log) < EARLY_LOG_MAX:
            account.early_call_log.append(
                f"{request.method} {request.url.path} {arrived - account.limited_at:.3f}s "
                f"into a {account.wait_until - account.limited_at:.0f}s Retry-After"
            )
    latency = state.fault(provider, email, "latency_ms")
    if latency:
        await asyncio.sleep(latency / 1000)
    if state.fault(provider, email, "down"):
        return unavailable(provider)
    retry_after = state.take_429(provider, email)
    if retry_after is not None:
        account.limited_at = time.monotonic()
        account.limited_peer = peer_of(request)
        account.wait_until = account.limited_at + retry_after
        return throttled(provider, retry_after)
    if state.injected_error(provider, email):
        return server_error(provider)
    return state.account(provider, email)


async def oauth_gate(provider: Provider, request: Request) -> JSONResponse | None:
    """Provider-wide faults on the OAuth endpoints: latency and a provider that is down."""
    state: SimState = request.app.state.sim
    latency = state.fault(provider, None, "latency_ms")
    if latency:
        await asyncio.sleep(latency / 1000)
    if state.fault(provider, None, "down"):
        return unavailable(provider)
    return None
