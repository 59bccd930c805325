"""The baseline's app factory and its three routes (thin: parse, call, map errors)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from sqlalchemy import text

from devtools.baseline.errors import BaselineError
from devtools.baseline.service import InlineCallback
from devtools.baseline.settings import BaselineSettings
from devtools.baseline.store import BaselineStore, make_async_engine
from services.providers import ProviderSettings, build_client

ProviderPath = Literal["zoom", "google_meet"]


def create_app(
    settings: BaselineSettings | None = None,
    *,
    provider_settings: ProviderSettings | None = None,
) -> FastAPI:
    """Compose the engine, store and provider clients when the app starts; assemble routes."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = settings or BaselineSettings()
        providers = provider_settings or ProviderSettings()
        engine = make_async_engine(config.database_url, pool_size=config.db_pool_size)
        callback = InlineCallback(
            store=BaselineStore(engine, cipher=config.token_cipher()),
            clients={
                "zoom": build_client("zoom", settings=providers),
                "google_meet": build_client("google_meet", settings=providers),
            },
            state_ttl=timedelta(seconds=config.state_ttl_s),
        )
        app.state.callback = callback
        app.state.engine = engine
        try:
            yield
        finally:
            await callback.aclose()
            await engine.dispose()

    app = FastAPI(title="relink inline baseline", lifespan=lifespan)

    @app.get("/readyz")
    async def readyz(request: Request) -> dict[str, str]:
        async with request.app.state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return {"status": "ok"}

    @app.get("/oauth/{provider}/start")
    async def start(
        request: Request, provider: ProviderPath, tutor_id: Annotated[uuid.UUID, Query()]
    ) -> Response:
        # No sign-in here: the tutor comes as a parameter (the gateway checks a signed token).
        url = await request.app.state.callback.start(tutor_id, provider)
        return RedirectResponse(url, status_code=302)

    @app.get("/oauth/{provider}/callback")
    async def callback(
        request: Request, provider: ProviderPath, state: str = "", code: str = ""
    ) -> Response:
        if not state or not code:
            return PlainTextResponse("state and code are required", status_code=400)
        try:
            outcome = await request.app.state.callback.complete(provider, state=state, code=code)
        except BaselineError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        return RedirectResponse(outcome.redirect_path, status_code=303)

    return app
