"""The app factory: the one place that composes the gateway's dependencies."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.db.engine import make_engine, make_session_factory
from services.core.errors import ConfigurationError
from services.core.logs import get_logger
from services.oauth_gateway.domain import scope_label
from services.oauth_gateway.errors import (
    BookingFailed,
    Conflict,
    Forbidden,
    GatewayError,
    NotFound,
    NotSignedIn,
    OAuthRejected,
)
from services.oauth_gateway.metrics import GatewayMetrics
from services.oauth_gateway.routes import api, dev, oauth, ops, pages, webhooks
from services.oauth_gateway.service import Gateway
from services.oauth_gateway.settings import GatewaySettings
from services.oauth_gateway.store import GatewayStore
from services.providers import ProviderClient, ProviderSettings, build_client

log = get_logger(__name__)
HERE = Path(__file__).parent
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
        clients = {p: build_client(p, settings=provider_settings) for p in PROVIDERS}  # type: ignore[arg-type]
    return Gateway(settings=settings, store=store, clients=clients, metrics=GatewayMetrics())


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


def create_app(
    settings: GatewaySettings | None = None,
    *,
    gateway: Gateway | None = None,
    provider_settings: ProviderSettings | None = None,
) -> FastAPI:
    """Assemble the FastAPI app around a gateway (built from settings unless given)."""
    settings = settings or (gateway.settings if gateway else GatewaySettings())
    gateway = gateway or build_gateway(settings, provider_settings=provider_settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    app = FastAPI(title="relink OAuth gateway", version="1", lifespan=lifespan)
    app.state.gateway = gateway
    app.state.templates = Jinja2Templates(directory=HERE / "templates")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (oauth, pages, api, dev, ops, webhooks):
        app.include_router(module.router)
    app.add_exception_handler(GatewayError, _gateway_error)  # type: ignore[arg-type]
    app.add_exception_handler(SQLAlchemyError, _database_error)  # type: ignore[arg-type]
    app.add_middleware(RequestMetrics, gateway=gateway)
    return app


STATUS = (
    (NotSignedIn, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (OAuthRejected, 400),
    (Conflict, 409),
    (BookingFailed, 502),
)

TITLES = {
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    400: "We could not connect your video provider",
    409: "That cannot be done right now",
    502: "The video provider did not answer",
}


def _status_of(exc: GatewayError) -> int:
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)


async def _gateway_error(request: Request, exc: GatewayError) -> Response:
    """JSON for the APIs, a clear page for browsers."""
    code = _status_of(exc)
    reason = getattr(exc, "reason", type(exc).__name__)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": reason, "detail": str(exc)}, status_code=code)
    gateway: Gateway = request.app.state.gateway
    context: dict[str, Any] = {
        "title": TITLES.get(code, "Something went wrong"),
        "detail": str(exc),
        "reason": reason,
        "status": code,
        "dev_mode": gateway.settings.dev_mode,
        "retry_url": getattr(exc, "retry_url", None),
        "missing": [scope_label(s) for s in getattr(exc, "missing", ())],
    }
    templates: Jinja2Templates = request.app.state.templates
    response: HTMLResponse = templates.TemplateResponse(
        request, "error.html", context, status_code=code
    )
    return response


async def _database_error(request: Request, exc: SQLAlchemyError) -> Response:
    """The transaction rolled back: nothing was changed; say so instead of a bare 500."""
    log.error("database error on %s: %s", request.url.path, type(exc).__name__)
    error = GatewayError("We could not save this right now; nothing was changed. Please try again.")
    response = await _gateway_error(request, error)
    response.status_code = 503
    return response


class RequestMetrics:
    """Counts requests and their durations by route template (pure ASGI, no body buffering)."""

    def __init__(self, app: ASGIApp, *, gateway: Gateway) -> None:
        self.app = app
        self.metrics = gateway.metrics

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
