"""The service API for the platform's backend: `/platform/v1`, API keys, idempotent writes."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Security
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from services.oauth_gateway.adapters.web.openapi import ALWAYS, answers, platform_key
from services.oauth_gateway.adapters.web.sse import STREAM_ANSWER, stream_response
from services.oauth_gateway.adapters.web.views import (
    EXTERNAL_ID,
    PlatformSession,
    PlatformSessionIn,
    PlatformUser,
    PlatformUserIn,
    StatusChange,
    SwitchView,
)
from services.oauth_gateway.usecases.platform import Caller, Platform

router = APIRouter(prefix="/platform/v1", tags=["platform"])

ExternalId = Annotated[str, Path(pattern=EXTERNAL_ID, description="the platform's own id")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="a repeat with the same key answers the first answer and does nothing",
    ),
]
# Every operation: no or a bad key (401), a key without the scope (403).
KEYED = (401, 403, *ALWAYS)


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


async def current_caller(
    platform: PlatformDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(platform_key)],
) -> Caller:
    return await platform.caller(credentials.credentials if credentials else None)


CallerDep = Annotated[Caller, Depends(current_caller)]


def _json(status: int, body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _request_id(request: Request, body: str = "") -> bytes:
    return f"{request.method} {request.url.path}\n{body}".encode()


@router.put(
    "/users/{user_id}",
    response_model=PlatformUser,
    responses={
        **answers(400, 409, 422, *KEYED),
        201: {"model": PlatformUser, "description": "Created"},
    },
)
async def put_user(
    user_id: ExternalId,
    body: PlatformUserIn,
    request: Request,
    caller: CallerDep,
    platform: PlatformDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Create or update a tutor or student by the platform's id (200 updated, 201 created)."""

    async def run() -> tuple[int, Any]:
        user, created = await platform.put_user(caller, user_id, body)
        return (201 if created else 200), user.model_dump(mode="json")

    status, answer = await platform.idempotent(
        caller, idempotency_key, _request_id(request, body.model_dump_json()), run
    )
    return _json(status, answer)


@router.get("/users/{user_id}", responses=answers(404, 422, *KEYED))
async def get_user(user_id: ExternalId, caller: CallerDep, platform: PlatformDep) -> PlatformUser:
    """One user by the platform's id."""
    return await platform.get_user(caller, user_id)


@router.post(
    "/sessions",
    status_code=201,
    response_model=PlatformSession,
    responses=answers(400, 404, 409, 422, 502, *KEYED),
)
async def create_session(
    body: PlatformSessionIn,
    request: Request,
    caller: CallerDep,
    platform: PlatformDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Book a session: it gets a meeting at the tutor's current provider (409 if none)."""

    async def run() -> tuple[int, Any]:
        made = await platform.create_session(caller, body)
        return 201, made.model_dump(mode="json")

    status, answer = await platform.idempotent(
        caller, idempotency_key, _request_id(request, body.model_dump_json()), run
    )
    return _json(status, answer)


@router.get("/sessions/{session_id}", responses=answers(404, 422, *KEYED))
async def get_session(
    session_id: ExternalId, caller: CallerDep, platform: PlatformDep
) -> PlatformSession:
    """One session by the platform's id: its status, provider and current join link."""
    return await platform.get_session(caller, session_id)


@router.put(
    "/sessions/{session_id}/status",
    response_model=PlatformSession,
    responses=answers(400, 404, 409, 422, *KEYED),
)
async def put_status(
    session_id: ExternalId,
    body: StatusChange,
    request: Request,
    caller: CallerDep,
    platform: PlatformDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Record where the session is in its life.

    CANCELLED emits `session.cancelled` in the same transaction: the meeting
    is deleted at the provider by the migrator (retried until it is gone),
    and the student is emailed a calendar cancellation by the notifier.
    """

    async def run() -> tuple[int, Any]:
        changed = await platform.change_status(caller, session_id, body.status)
        return 200, changed.model_dump(mode="json")

    status, answer = await platform.idempotent(
        caller, idempotency_key, _request_id(request, body.model_dump_json()), run
    )
    return _json(status, answer)


@router.get("/tutors/{user_id}/switches", responses=answers(404, 422, *KEYED))
async def tutor_switches(
    user_id: ExternalId, caller: CallerDep, platform: PlatformDep
) -> list[SwitchView]:
    """A tutor's switches by the platform's id, newest first (scope `switches:read`)."""
    return await platform.tutor_switches(caller, user_id)


@router.get("/switches/{switch_id}", responses=answers(404, 422, *KEYED))
async def get_switch(switch_id: uuid.UUID, caller: CallerDep, platform: PlatformDep) -> SwitchView:
    """One switch's progress, message and failed sessions (scope `switches:read`)."""
    return await platform.switch(caller, switch_id)


@router.get(
    "/switches/{switch_id}/events",
    response_class=StreamingResponse,
    responses={**STREAM_ANSWER, **answers(404, 422, *KEYED)},
)
async def switch_events(
    switch_id: uuid.UUID,
    request: Request,
    caller: CallerDep,
    platform: PlatformDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """One switch's progress as server-sent events, for the platform's own UI
    (scope `switches:read`): the stream of `GET /api/switches/{id}/events`."""

    async def fetch() -> SwitchView:
        return await platform.switch(caller, switch_id, with_failures=False)

    return await stream_response(
        fetch,
        last_event_id=last_event_id,
        disconnected=request.is_disconnected,
        every_s=platform.gateway.settings.progress_poll_ms / 1000,
    )
