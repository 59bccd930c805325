"""What the tutoring platform's backend does through the service API (`/platform/v1`).

The platform keeps relink's users and sessions true with its own ids (and
reads its tutors' switches, `switches:read`): it
upserts tutors and students, books sessions (each gets a meeting at the
tutor's current provider, as a tutor's own booking does), and reports each
session's life (JOIN_OPEN … COMPLETED, or CANCELLED: a `session.cancelled`
event, on which the migrator deletes the meeting and the notifier tells the
student). Writes may carry an `Idempotency-Key`: a repeat answers what the
first answered and does nothing; the same key for a different request is
refused (409).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.core.db.models import Session as SessionRow
from services.core.db.models import SessionStatus
from services.core.logs import get_logger
from services.oauth_gateway.adapters.db.platform import PlatformStore
from services.oauth_gateway.adapters.web.views import (
    BookingRequest,
    PlatformSession,
    PlatformSessionIn,
    PlatformUser,
    PlatformUserIn,
    SwitchView,
)
from services.oauth_gateway.domain import Principal, status_change_refusal
from services.oauth_gateway.errors import Conflict, Forbidden, NotFound, NotSignedIn
from services.oauth_gateway.usecases.tutors import Gateway, in_thread

log = get_logger(__name__)


@dataclass(frozen=True)
class Caller:
    """A platform backend, proved by one of its API keys."""

    key_id: str
    scopes: tuple[str, ...]

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this API key lacks the scope {scope!r}")


class Platform:
    """The service API's use cases, beside the tutors' (`Gateway`, whose bookings they reuse)."""

    def __init__(self, gateway: Gateway, store: PlatformStore) -> None:
        self.gateway = gateway
        self.store = store

    # -- who is calling ---------------------------------------------------------

    async def caller(self, presented: str | None) -> Caller:
        if not presented:
            raise NotSignedIn("send an API key: Authorization: Bearer rk_…")
        found = await in_thread(self.store.authenticate, presented, now=self.gateway.clock())
        if found is None:
            raise NotSignedIn("unknown or revoked API key")
        return Caller(*found)

    async def idempotent(
        self,
        caller: Caller,
        key: str | None,
        request: bytes,
        run: Callable[[], Awaitable[tuple[int, Any]]],
    ) -> tuple[int, Any]:
        """Run a write once per `Idempotency-Key`: (status, JSON body), the first one's on a repeat.

        `request` identifies the request (method, path, canonical body); the
        same key with another request is a 409. A request that failed gives
        its key back, so the platform can send it again.
        """
        if key is None:
            return await run()
        if not key or len(key) > 255 or not key.isprintable():
            raise Conflict("Idempotency-Key must be 1-255 printable characters")
        digest = hashlib.sha256(request).digest()
        claim = await in_thread(
            self.store.claim, caller.key_id, key, digest, now=self.gateway.clock()
        )
        if claim.conflict is not None:
            raise Conflict(claim.conflict)
        if not claim.owner:
            assert claim.status_code is not None
            return claim.status_code, claim.response
        try:
            status, body = await run()
        except BaseException:
            await in_thread(self.store.give_back, caller.key_id, key)
            raise
        await in_thread(self.store.answer, caller.key_id, key, status, body)
        return status, body

    # -- users -------------------------------------------------------------------

    async def put_user(
        self, caller: Caller, external_id: str, body: PlatformUserIn
    ) -> tuple[PlatformUser, bool]:
        caller.require("users:write")
        try:
            row, created = await in_thread(
                self.store.upsert_user,
                external_id,
                role=body.role,
                name=body.name,
                email=body.email.lower(),
                timezone=body.timezone,
            )
        except ValueError as exc:
            raise Conflict(str(exc)) from exc
        return _user_view(row), created

    async def get_user(self, caller: Caller, external_id: str) -> PlatformUser:
        caller.require("users:read")
        row = await in_thread(self.store.user, external_id)
        if row is None:
            raise NotFound(f"no user {external_id!r}")
        return _user_view(row)

    # -- sessions ----------------------------------------------------------------

    async def create_session(self, caller: Caller, body: PlatformSessionIn) -> PlatformSession:
        caller.require("sessions:write")
        tutor = await in_thread(self.store.user, body.tutor)
        student = await in_thread(self.store.user, body.student)
        if tutor is None or tutor.role != "tutor":
            raise NotFound(f"no tutor {body.tutor!r}")
        if student is None or student.role != "student":
            raise NotFound(f"no student {body.student!r}")
        if await in_thread(self.store.session, body.id) is not None:
            raise Conflict(f"a session {body.id!r} exists already")
        booking = BookingRequest(
            student_id=student.id,
            topic=body.topic,
            scheduled_start_at=body.scheduled_start_at,
            duration_minutes=body.duration_minutes,
            timezone=body.timezone,
        )
        principal = Principal(user_id=tutor.id, role="tutor", expires_at=0)
        made = await self.gateway.accept_booking(principal, booking, external_id=body.id)
        return PlatformSession(
            id=body.id,
            relink_id=made.id,
            tutor=body.tutor,
            student=body.student,
            status=made.status,
            provider=made.provider,
            join_url=made.join_url,
            scheduled_start_at=made.scheduled_start_at,
            duration_minutes=made.duration_minutes,
        )

    async def get_session(self, caller: Caller, external_id: str) -> PlatformSession:
        caller.require("sessions:read")
        row = await in_thread(self.store.session, external_id)
        if row is None:
            raise NotFound(f"no session {external_id!r}")
        return await self._session_view(row)

    async def change_status(self, caller: Caller, external_id: str, status: str) -> PlatformSession:
        """Record where the session is; CANCELLED also owes the deletion of its meeting.

        One transaction writes the status and, for a cancellation, its
        `session.cancelled` outbox row. The gateway calls no provider: the
        migrator deletes the meeting (retrying with backoff until it is gone,
        with the tokens of whichever provider it is at, also mid-switch) and
        the notifier emails the student. The migrator moves only SCHEDULED and
        JOIN_OPEN sessions, so a switch in flight leaves a cancelled one alone.
        """
        caller.require("sessions:write")
        try:
            changed = await in_thread(
                self.store.set_status,
                external_id,
                SessionStatus(status),
                now=self.gateway.clock(),
                refusal=status_change_refusal,
            )
        except ValueError as exc:
            raise Conflict(str(exc)) from exc
        if changed is None:
            raise NotFound(f"no session {external_id!r}")
        after, _before = changed
        return await self._session_view(after)

    # -- switches (read only) ----------------------------------------------------

    async def tutor_switches(self, caller: Caller, external_id: str) -> list[SwitchView]:
        """A tutor's switches, newest first, as the tutor's own page shows them."""
        caller.require("switches:read")
        tutor = await in_thread(self.store.user, external_id)
        if tutor is None or tutor.role != "tutor":
            raise NotFound(f"no tutor {external_id!r}")
        return await self.gateway.history(_as_tutor(tutor.id))

    async def switch(
        self, caller: Caller, switch_id: uuid.UUID, *, with_failures: bool = True
    ) -> SwitchView:
        """One switch's progress (the tutor's page's view), whoever's tutor it is."""
        caller.require("switches:read")
        owner = await in_thread(self.store.switch_owner, switch_id)
        if owner is None:
            raise NotFound(f"no switch {switch_id}")
        return await self.gateway.switch(_as_tutor(owner), switch_id, with_failures=with_failures)

    async def _session_view(self, row: SessionRow) -> PlatformSession:
        tutor = await in_thread(self.gateway.store.user, row.tutor_id)
        student = await in_thread(self.gateway.store.user, row.student_id)
        return PlatformSession(
            id=row.external_id or str(row.id),
            relink_id=row.id,
            tutor=tutor.external_id if tutor else None,
            student=student.external_id if student else None,
            status=row.status,
            provider=row.provider,
            join_url=row.join_url,
            scheduled_start_at=row.scheduled_start_at,
            duration_minutes=row.duration_minutes,
        )


def _as_tutor(tutor_id: uuid.UUID) -> Principal:
    """The tutor a platform read is about (the service API reads on the tutor's behalf)."""
    return Principal(user_id=tutor_id, role="tutor", expires_at=0)


def _user_view(row: Any) -> PlatformUser:
    return PlatformUser(
        id=row.external_id,
        relink_id=row.id,
        role=row.role,
        name=row.name,
        email=row.email,
        timezone=row.timezone,
    )
