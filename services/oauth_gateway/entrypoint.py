"""The gateway's process: the FastAPI app factory `create_app` (routers, error pages, middleware).

`relink gateway` serves it with uvicorn (`services.oauth_gateway.entrypoint:create_app`,
factory=True); the use cases and adapters come from `bootstrap.build_gateway`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from services.core import metrics, tracing
from services.core.db.errors import StoreError
from services.core.logs import get_logger
from services.oauth_gateway.adapters.web.guard import RequestGuard, request_id_of
from services.oauth_gateway.adapters.web.routes import (
    api,
    dev,
    oauth,
    ops,
    pages,
    platform,
    schemas,
    webhooks,
)
from services.oauth_gateway.adapters.web.views import time_tag
from services.oauth_gateway.bootstrap import build_gateway, build_platform
from services.oauth_gateway.domain import scope_label
from services.oauth_gateway.errors import (
    BookingFailed,
    BookingInvalid,
    BookingThrottled,
    Conflict,
    Forbidden,
    GatewayError,
    InvalidRequest,
    NotFound,
    NotSignedIn,
    OAuthRejected,
    ProviderUnavailable,
)
from services.oauth_gateway.metrics import RequestMetrics
from services.oauth_gateway.settings import GatewaySettings
from services.oauth_gateway.usecases.tutors import Gateway
from services.providers import ProviderSettings

log = get_logger(__name__)
WEB = Path(__file__).parent / "adapters" / "web"


def create_app(
    settings: GatewaySettings | None = None,
    *,
    gateway: Gateway | None = None,
    provider_settings: ProviderSettings | None = None,
) -> FastAPI:
    """Assemble the FastAPI app around a gateway (built from settings unless given)."""
    settings = settings or (gateway.settings if gateway else GatewaySettings())
    gateway = gateway or build_gateway(settings, provider_settings=provider_settings)
    metrics.process_started("gateway")
    tracing.configure_tracing("gateway")  # each uvicorn worker: its own exporter

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    docs = settings.dev_mode if settings.expose_docs is None else settings.expose_docs
    app = FastAPI(
        title="relink OAuth gateway",
        version="1",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.gateway = gateway
    app.state.platform = build_platform(gateway)
    app.state.templates = Jinja2Templates(directory=WEB / "templates")
    # every moment a page shows: UTC in <time>, converted in the viewer's zone by the browser
    app.state.templates.env.filters["when"] = time_tag
    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")
    for module in (oauth, pages, api, platform, dev, ops, webhooks, schemas):
        app.include_router(module.router)
    if settings.expose_metrics:
        app.include_router(ops.metrics_router)
    app.add_exception_handler(GatewayError, _gateway_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _framework_refusal)  # type: ignore[arg-type]
    app.add_exception_handler(SQLAlchemyError, _database_error)  # type: ignore[arg-type]
    app.add_exception_handler(StoreError, _database_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(RequestMetrics, metrics=gateway.metrics)
    # Outermost (added last): limits and request ids before anything reads the request.
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        max_url_bytes=settings.max_url_bytes,
    )
    return app


STATUS = (
    (NotSignedIn, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (ProviderUnavailable, 503),
    (OAuthRejected, 400),
    (Conflict, 409),
    (BookingInvalid, 422),
    (InvalidRequest, 422),
    (BookingThrottled, 503),
    (BookingFailed, 502),
)

TITLES = {
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    400: "We could not connect your video provider",
    409: "That cannot be done right now",
    422: "That request is not valid",
    502: "The video provider did not answer",
    503: "The video provider is not answering",
}


# Where errors answer in JSON (the rest are pages for browsers).
JSON_PATHS = ("/api/", "/platform/", "/schemas/")


def _status_of(exc: GatewayError) -> int:
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)


async def _gateway_error(request: Request, exc: GatewayError) -> Response:
    """JSON for the APIs, a clear page for browsers."""
    code = _status_of(exc)
    reason = getattr(exc, "reason", type(exc).__name__)
    request_id = request_id_of(request.scope)
    retry_after = getattr(exc, "retry_after_s", None)
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else None
    if request.url.path.startswith(JSON_PATHS):
        return JSONResponse(
            {"error": reason, "detail": str(exc), "request_id": request_id},
            status_code=code,
            headers=headers,
        )
    gateway: Gateway = request.app.state.gateway
    context: dict[str, Any] = {
        "title": TITLES.get(code, "Something went wrong"),
        "detail": str(exc),
        "reason": reason,
        "status": code,
        "dev_mode": gateway.settings.dev_mode,
        "retry_url": getattr(exc, "retry_url", None),
        "missing": [scope_label(s) for s in getattr(exc, "missing", ())],
        "request_id": request_id,
    }
    templates: Jinja2Templates = request.app.state.templates
    response: HTMLResponse = templates.TemplateResponse(
        request, "error.html", context, status_code=code
    )
    return response


async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
    """422 in the API's error shape (`InvalidRequestBody`), naming each refused part.

    The values themselves are not echoed back (they may be anything, a token included).
    """
    fields = [
        {
            "location": ".".join(str(part) for part in error.get("loc", ())),
            "message": str(error.get("msg", "invalid")),
        }
        for error in exc.errors()
    ]
    summary = "; ".join(f"{f['location']}: {f['message']}" for f in fields[:5])
    error = InvalidRequest(f"the request is not valid ({summary}); nothing was changed")
    if request.url.path.startswith(JSON_PATHS):
        return JSONResponse(
            {
                "error": "invalid_request",
                "detail": str(error),
                "request_id": request_id_of(request.scope),
                "fields": fields,
            },
            status_code=422,
        )
    return await _gateway_error(request, error)


# What the framework itself refuses (no such route, wrong method, a body that
# is not JSON at all): the same error shape, under these codes.
FRAMEWORK_REASONS = {400: "malformed_body", 404: "NotFound", 405: "method_not_allowed"}


async def _framework_refusal(request: Request, exc: HTTPException) -> Response:
    """Starlette's and FastAPI's own refusals, in the API's error shape (or the error page)."""
    reason = FRAMEWORK_REASONS.get(exc.status_code, f"http_{exc.status_code}")
    detail = "the request body is not valid JSON" if exc.status_code == 400 else str(exc.detail)
    error = GatewayError(f"{detail}; nothing was changed")
    error.reason = reason  # type: ignore[attr-defined]
    response = await _gateway_error(request, error)
    response.status_code = exc.status_code
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _database_error(request: Request, exc: SQLAlchemyError | StoreError) -> Response:
    """The transaction rolled back: nothing was changed; say so instead of a bare 500.

    PostgreSQL away (`StoreUnavailable`) is one line per request, no traceback:
    the gateway answers 503 until it is back, and needs no restart.
    """
    log.error(
        "database error on %s: %s",
        request.url.path,
        type(exc).__name__,
        extra={"request_id": request_id_of(request.scope)},
    )
    error = GatewayError("We could not save this right now; nothing was changed. Please try again.")
    response = await _gateway_error(request, error)
    response.status_code = 503
    return response


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    """A bug: the API's error shape (or the error page), never a bare text/plain 500.

    The log line carries the request id the answer shows, so a report can be traced.
    """
    log.error(
        "unexpected %s on %s %s",
        type(exc).__name__,
        request.method,
        request.url.path,
        exc_info=exc,
        extra={"request_id": request_id_of(request.scope)},
    )
    error = GatewayError("Something went wrong on our side; nothing was changed.")
    error.reason = "internal_error"  # type: ignore[attr-defined]
    response = await _gateway_error(request, error)
    response.status_code = 500
    # Starlette answers this outside the middleware (ServerErrorMiddleware), so
    # the guard's headers are not added on the way out: add the request id here.
    response.headers["x-request-id"] = request_id_of(request.scope)
    return response
