"""JSON APIs: the connection, switches (status, history, retry, rollback), sessions, bookings."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request, status
from fastapi.responses import StreamingResponse

from services.oauth_gateway.adapters.web.deps import (
    CsrfChecked,
    CurrentStudent,
    CurrentTutor,
    GatewayDep,
)
from services.oauth_gateway.adapters.web.openapi import SIGNED_IN, answers
from services.oauth_gateway.adapters.web.sse import STREAM_ANSWER, stream_response
from services.oauth_gateway.adapters.web.views import (
    BookingRequest,
    ConnectionView,
    RetryAccepted,
    RollbackAccepted,
    SessionView,
    SwitchView,
)

router = APIRouter(prefix="/api", tags=["api"])


@router.get("/connection", responses=answers(*SIGNED_IN))
async def connection(tutor: CurrentTutor, gateway: GatewayDep) -> ConnectionView | None:
    """The tutor's current video provider, or null."""
    return await gateway.connection(tutor)


@router.get("/switches", responses=answers(*SIGNED_IN))
async def switch_history(tutor: CurrentTutor, gateway: GatewayDep) -> list[SwitchView]:
    """The tutor's switches, newest first."""
    return await gateway.history(tutor)


@router.get("/switches/{switch_id}", responses=answers(404, 422, *SIGNED_IN))
async def switch_status(
    switch_id: uuid.UUID, tutor: CurrentTutor, gateway: GatewayDep
) -> SwitchView:
    """One switch's progress, message and failed sessions (what the page polls)."""
    return await gateway.switch(tutor, switch_id)


@router.get(
    "/switches/{switch_id}/events",
    response_class=StreamingResponse,
    responses={**STREAM_ANSWER, **answers(404, 422, *SIGNED_IN)},
)
async def switch_events(
    switch_id: uuid.UUID,
    request: Request,
    tutor: CurrentTutor,
    gateway: GatewayDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """One switch's progress as a stream (what the video-setup page listens to)."""

    async def fetch() -> SwitchView:
        return await gateway.switch(tutor, switch_id, with_failures=False)

    return await stream_response(
        fetch,
        last_event_id=last_event_id,
        disconnected=request.is_disconnected,
        every_s=gateway.settings.progress_poll_ms / 1000,
    )


@router.post(
    "/switches/{switch_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[CsrfChecked],
    responses=answers(404, 409, 422, *SIGNED_IN),
)
async def retry_failed(
    switch_id: uuid.UUID, tutor: CurrentTutor, gateway: GatewayDep
) -> RetryAccepted:
    """Ask the migrator to retry the switch's failed sessions."""
    return await gateway.request_retry(tutor, switch_id)


@router.post(
    "/switches/{switch_id}/rollback",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[CsrfChecked],
    responses=answers(404, 409, 422, *SIGNED_IN),
)
async def roll_back(
    switch_id: uuid.UUID, tutor: CurrentTutor, gateway: GatewayDep
) -> RollbackAccepted:
    """Go back to the previous provider (within the grace period)."""
    return await gateway.request_rollback(tutor, switch_id)


@router.get("/tutor/sessions", responses=answers(*SIGNED_IN))
async def tutor_sessions(tutor: CurrentTutor, gateway: GatewayDep) -> list[SessionView]:
    """The tutor's upcoming sessions with their current join links."""
    return await gateway.upcoming_for(tutor)


@router.get("/student/sessions", responses=answers(*SIGNED_IN))
async def student_sessions(student: CurrentStudent, gateway: GatewayDep) -> list[SessionView]:
    """The student's upcoming sessions with their current join links."""
    return await gateway.upcoming_for(student)


@router.post(
    "/bookings",
    status_code=status.HTTP_201_CREATED,
    dependencies=[CsrfChecked],
    responses=answers(400, 404, 409, 422, 502, *SIGNED_IN),
)
async def accept_booking(
    body: BookingRequest, tutor: CurrentTutor, gateway: GatewayDep
) -> SessionView:
    """Accept a booking: its session gets a meeting at the tutor's current provider."""
    return await gateway.accept_booking(tutor, body)
