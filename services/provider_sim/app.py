"""The simulator's FastAPI app: Zoom under /zoom, Google under /google, the admin API under /_admin.

One process, state in memory: a second worker would have a second world, so
we scale by keeping the hot path cheap rather than by adding workers.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.provider_sim import admin, google_api, webhooks, zoom_api
from services.provider_sim.settings import ProviderSimSettings
from services.provider_sim.state import SimState


def create_app(settings: ProviderSimSettings | None = None) -> FastAPI:
    """Assemble the simulator with fresh state."""
    settings = settings or ProviderSimSettings()
    app = FastAPI(
        title="relink provider simulator",
        docs_url="/_admin/docs",
        openapi_url="/_admin/openapi.json",
    )
    app.state.sim = SimState(settings)
    app.include_router(zoom_api.router)
    app.include_router(google_api.router)
    app.include_router(admin.router)
    app.include_router(webhooks.router)
    app.include_router(webhooks.google_router)
    return app
