"""Provider switches: their views, and the retry and rollback a tutor requests."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.core import events, switching
from services.core.db.models import (
    Booking,
    Connection,
    MigrationState,
    ProviderSwitch,
    SessionMigration,
    SwitchRequest,
    SwitchState,
    User,
)
from services.core.db.models import Session as SessionRow
from services.core.messages import SessionRetryRequested, SwitchRollbackRequested
from services.core.tokens import TokenCipher
from services.oauth_gateway.adapters.db.common import add_event, lock_connection, rebind
from services.oauth_gateway.adapters.web.views import FailedSessionView, SwitchView, message_view
from services.oauth_gateway.domain import Progress, rollback_allowed
from services.oauth_gateway.errors import NotFound, NothingToRetry, RollbackNotAllowed

# The retry event lists at most this many sessions (its schema's maxItems); beyond, [] = all.
RETRY_LIST_MAX = 1000


class SwitchStore:
    """Reads the tutor's switches and records retry and rollback requests."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        cipher: TokenCipher,
        topics: events.TopicNames,
    ) -> None:
        self._sessions = session_factory
        self._cipher = cipher
        self._topics = topics

    def switches(self, tutor_id: uuid.UUID, *, now: datetime, limit: int = 50) -> list[SwitchView]:
        """The tutor's switches, newest first."""
        with self._sessions() as s:
            conn = s.scalars(
                select(Connection).where(Connection.tutor_id == tutor_id)
            ).one_or_none()
            rows = s.execute(
                select(SwitchRequest, ProviderSwitch)
                .outerjoin(ProviderSwitch, ProviderSwitch.id == SwitchRequest.id)
                .where(SwitchRequest.tutor_id == tutor_id)
                .order_by(SwitchRequest.requested_at.desc(), SwitchRequest.generation.desc())
                .limit(limit)
            ).all()
            return [self._switch_view(r, p, conn, now=now) for r, p in rows]

    def switch(
        self,
        *,
        tutor_id: uuid.UUID,
        switch_id: uuid.UUID,
        now: datetime,
        with_failures: bool = True,
    ) -> SwitchView:
        """One of the tutor's switches; `NotFound` for anyone else's."""
        with self._sessions() as s:
            request = s.get(SwitchRequest, switch_id)
            if request is None or request.tutor_id != tutor_id:
                raise NotFound("no such switch")
            progress = s.get(ProviderSwitch, switch_id)
            conn = s.scalars(
                select(Connection).where(Connection.tutor_id == tutor_id)
            ).one_or_none()
            view = self._switch_view(request, progress, conn, now=now)
            if with_failures and view.sessions_failed > 0:
                view.failed_sessions = self._failed_sessions(s, switch_id)
            return view

    def _switch_view(
        self,
        request: SwitchRequest,
        progress: ProviderSwitch | None,
        conn: Connection | None,
        *,
        now: datetime,
    ) -> SwitchView:
        state = _state(request, progress)
        waiting_until = progress.waiting_until if progress else None
        waiting = waiting_until if waiting_until and waiting_until > now else None
        total = progress.sessions_total if progress else 0
        migrated = progress.sessions_migrated if progress else 0
        failed = progress.sessions_failed if progress else 0
        view_progress = Progress(
            state=state,
            total=total,
            migrated=migrated,
            failed=failed,
            to_provider=request.to_provider,
            waiting_until=waiting,
        )
        refusal = (
            "no connection" if conn is None else _rollback_refusal(request, state, conn, now=now)
        )
        return SwitchView(
            id=request.id,
            from_provider=request.from_provider,
            to_provider=request.to_provider,
            generation=request.generation,
            state=state,
            sessions_total=total,
            sessions_migrated=migrated,
            sessions_failed=failed,
            sessions_remaining=view_progress.remaining,
            created_at=request.requested_at,
            completed_at=progress.completed_at if progress else None,
            rollback_deadline=request.rollback_deadline,
            rolled_back_at=progress.rolled_back_at if progress else None,
            waiting_until=waiting,
            message=message_view(view_progress),
            can_roll_back=refusal is None,
        )

    @staticmethod
    def _failed_sessions(s: Session, switch_id: uuid.UUID) -> list[FailedSessionView]:
        rows = s.execute(
            select(
                SessionMigration.session_id,
                SessionMigration.scheduled_start_at,
                SessionMigration.last_error,
                SessionMigration.attempts,
                Booking.topic,
                User.name,
            )
            .join(SessionRow, SessionRow.id == SessionMigration.session_id)
            .join(Booking, Booking.id == SessionRow.booking_id)
            .join(User, User.id == SessionRow.student_id)
            .where(
                SessionMigration.switch_id == switch_id,
                SessionMigration.state == MigrationState.FAILED.value,
            )
            .order_by(SessionMigration.scheduled_start_at)
            .limit(200)
        ).all()
        return [
            FailedSessionView(
                session_id=r.session_id,
                scheduled_start_at=r.scheduled_start_at,
                reason=r.last_error,
                attempts=r.attempts,
                topic=r.topic,
                student_name=r.name,
            )
            for r in rows
        ]

    def request_retry(
        self, *, tutor_id: uuid.UUID, switch_id: uuid.UUID, now: datetime
    ) -> tuple[uuid.UUID, list[uuid.UUID]]:
        """Record `session.retry_requested` for the failed sessions; (event id, session ids)."""
        with self._sessions() as s, s.begin():
            conn = lock_connection(s, tutor_id)
            request = s.get(SwitchRequest, switch_id)
            if request is None or request.tutor_id != tutor_id:
                raise NotFound("no such switch")
            row = s.get(ProviderSwitch, switch_id)
            if (
                conn is None
                or row is None
                or request.generation != conn.generation
                or _state(request, row) in switching.DROPPED
            ):
                raise NothingToRetry("a newer switch or a rollback replaced this switch")
            failed = list(
                s.scalars(
                    select(SessionMigration.session_id).where(
                        SessionMigration.switch_id == switch_id,
                        SessionMigration.state == MigrationState.FAILED.value,
                    )
                )
            )
            if not failed and row.sessions_failed == 0:
                raise NothingToRetry("no session of this switch failed")
            listed = failed if len(failed) <= RETRY_LIST_MAX else []
            event_id = add_event(
                self._topics,
                s,
                SessionRetryRequested(
                    switch_id=str(switch_id),
                    tutor_id=str(tutor_id),
                    session_ids=[str(i) for i in listed],
                    requested_at=now,
                ),
                tutor_id=tutor_id,
                now=now,
            )
            return event_id, failed

    def request_rollback(
        self, *, tutor_id: uuid.UUID, switch_id: uuid.UUID, now: datetime
    ) -> tuple[uuid.UUID, str, int]:
        """Re-activate the previous connection and record `switch.rollback_requested`.

        Returns (event id, provider restored, new generation). The new
        provider's tokens move to `previous_*`: the migrator needs them to
        delete the meetings it made there.

        Writes the request (`switch_requests.rollback_requested_at`), never
        the switch's progress: the migrator sets it ROLLING_BACK when it
        handles the request. Locks the connection row first
        (`services.core.db.locks.LOCK_ORDER`), then the request row.
        """
        with self._sessions() as s, s.begin():
            conn = lock_connection(s, tutor_id)  # LOCK_ORDER step 1
            request = s.scalars(
                select(SwitchRequest)
                .where(SwitchRequest.id == switch_id)
                .with_for_update(key_share=True)  # LOCK_ORDER step 2
            ).one_or_none()
            if request is None or request.tutor_id != tutor_id:
                raise NotFound("no such switch")
            if conn is None:
                raise RollbackNotAllowed("no connection to roll back")
            state = _state(request, s.get(ProviderSwitch, switch_id))
            refusal = _rollback_refusal(request, state, conn, now=now)
            if refusal is not None:
                raise RollbackNotAllowed(refusal)
            self._swap_with_previous(conn)
            conn.generation += 1
            conn.connected_at = now
            conn.updated_at = now
            request.rollback_requested_at = now
            event_id = add_event(
                self._topics,
                s,
                SwitchRollbackRequested(
                    switch_id=str(switch_id),
                    tutor_id=str(tutor_id),
                    to_provider=conn.provider,
                    generation=conn.generation,
                    requested_at=now,
                ),
                tutor_id=tutor_id,
                now=now,
            )
            return event_id, conn.provider, conn.generation

    def _swap_with_previous(self, conn: Connection) -> None:
        current = (
            conn.provider,
            rebind(
                self._cipher,
                conn,
                conn.access_token_encrypted,
                "access_token",
                "previous_access_token",
            ),
            rebind(
                self._cipher,
                conn,
                conn.refresh_token_encrypted,
                "refresh_token",
                "previous_refresh_token",
            ),
            conn.token_expires_at,
        )
        assert conn.previous_provider is not None
        conn.provider = conn.previous_provider
        restored = rebind(
            self._cipher,
            conn,
            conn.previous_access_token_encrypted,
            "previous_access_token",
            "access_token",
        )
        assert restored is not None
        conn.access_token_encrypted = restored
        conn.refresh_token_encrypted = rebind(
            self._cipher,
            conn,
            conn.previous_refresh_token_encrypted,
            "previous_refresh_token",
            "refresh_token",
        )
        conn.token_expires_at = conn.previous_token_expires_at
        # The account (id and email) swaps with the tokens: a later app removal
        # must find the restored account, and the page shows its email again.
        conn.provider_account_id, conn.previous_provider_account_id = (
            conn.previous_provider_account_id,
            conn.provider_account_id,
        )
        conn.provider_account_email, conn.previous_provider_account_email = (
            conn.previous_provider_account_email,
            conn.provider_account_email,
        )
        (
            conn.previous_provider,
            conn.previous_access_token_encrypted,
            conn.previous_refresh_token_encrypted,
            conn.previous_token_expires_at,
        ) = current


def _state(request: SwitchRequest, progress: ProviderSwitch | None) -> SwitchState:
    """The switch's state as the tutor sees it (`core.switching.shown_state`)."""
    return switching.shown_state(
        progress.state if progress else None,
        rollback_requested=request.rollback_requested_at is not None,
    )


def _rollback_refusal(
    row: SwitchRequest, state: SwitchState, conn: Connection, *, now: datetime
) -> str | None:
    """Why this switch cannot be rolled back now (None: it can)."""
    return rollback_allowed(
        switch_state=state,
        switch_generation=row.generation,
        connection_generation=conn.generation,
        connection_provider=conn.provider,
        switch_to_provider=row.to_provider,
        has_previous_tokens=conn.previous_access_token_encrypted is not None,
        deadline=row.rollback_deadline,
        now=now,
    )
