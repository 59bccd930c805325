"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from services.oauth_gateway.adapters.web.deps import GatewayDep
from services.oauth_gateway.adapters.web.openapi import answers

router = APIRouter(tags=["ops"])
# Mounted only when RELINK_GATEWAY_EXPOSE_METRICS is on.
metrics_router = APIRouter(tags=["ops"])


@router.get("/healthz", responses=answers(413, 414))
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


class Readiness(BaseModel):
    status: str = Field(description="`ready`, or `unavailable` with the database's error class")
    database: str | None = None


@router.get(
    "/readyz",
    response_model=None,
    responses={
        **answers(413, 414),
        200: {"model": Readiness, "description": "The database answers"},
        503: {"model": Readiness, "description": "The database does not answer"},
    },
)
async def ready(gateway: GatewayDep) -> JSONResponse | dict[str, str]:
    """The database answers: the gateway can take callbacks."""
    try:
        await gateway.check_database()
    except Exception as exc:
        return JSONResponse(
            {"status": "unavailable", "database": type(exc).__name__}, status_code=503
        )
    return {"status": "ready"}


@metrics_router.get("/metrics", response_class=PlainTextResponse, responses=answers(413, 414))
async def metrics(gateway: GatewayDep) -> PlainTextResponse:
    """Prometheus text format."""
    return PlainTextResponse(
        gateway.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
