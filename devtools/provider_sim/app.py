"""The simulator's FastAPI app: Zoom under /zoom, Google under /google, the admin API under /_admin.

One process, state in memory: a second worker would have a second world, so
we scale by keeping the hot path cheap rather than by adding workers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from devtools.provider_sim import admin, google_api, webhooks, zoom_api
from devtools.provider_sim.faults import StampArrival
from devtools.provider_sim.persistence import StateFile
from devtools.provider_sim.settings import ProviderSimSettings
from devtools.provider_sim.state import SimState


def create_app(settings: ProviderSimSettings | None = None) -> FastAPI:
    """Assemble the simulator with fresh state."""
    settings = settings or ProviderSimSettings()
    app = FastAPI(
        title="relink provider simulator",
        docs_url="/_admin/docs",
        openapi_url="/_admin/openapi.json",
    )
    app.state.sim = SimState(settings)
    app.state.state_file = None
    if settings.state_file is not None:
        # The world survives a restart (persistence.py): load it now, save after requests.
        state_file = StateFile(
            app.state.sim, settings.state_file, debounce_s=settings.state_save_delay_s
        )
        state_file.load()
        app.state.state_file = state_file

        @app.middleware("http")
        async def save_after_request(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            response = await call_next(request)
            # Reads change the state too (pending conferences, 429 bursts, counters).
            state_file.mark_dirty()
            return response

    # Outermost (added last), so the stamp is taken before any other middleware awaits.
    app.add_middleware(StampArrival)
    app.include_router(zoom_api.router)
    app.include_router(google_api.router)
    app.include_router(admin.router)
    app.include_router(webhooks.router)
    app.include_router(webhooks.google_router)
    return app
