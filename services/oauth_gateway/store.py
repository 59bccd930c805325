"""The gateway's PostgreSQL adapter: every read and every transaction it makes.

The switch is one transaction (`save_connection`): lock the tutor's
connection row, upsert the connection, and for a switch insert the
`provider_switches` row and the `provider.switched` outbox row. A callback
racing another for the same tutor waits on the row lock (or, for a first
connection, on the unique index) and then sees the winner's row.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from services.core import events
from services.core.db.models import (
    Booking,
    Connection,
    MeetingDeletion,
    MigrationState,
    OAuthState,
    Outbox,
    ProviderChannel,
    ProviderNotification,
    ProviderSwitch,
    SessionMigration,
    SessionStatus,
    SwitchState,
    User,
)
from services.core.db.models import Session as SessionRow
from services.core.tokens import CODE_VERIFIER, TokenCipher
from services.oauth_gateway.domain import (
    PROVIDER_LABELS,
    ConnectOutcome,
    Progress,
    connect_outcome,
    rollback_allowed,
)
from services.oauth_gateway.errors import (
    NoConnection,
    NotFound,
    NothingToRetry,
    RollbackNotAllowed,
    StateRejected,
)
from services.oauth_gateway.views import (
    ConnectionView,
    DeletedMeetingView,
    FailedSessionView,
    SessionView,
    SwitchView,
    message_view,
)
from services.providers import Meeting, ProviderAccount, TokenSet

SOURCE = "/relink/oauth-gateway"
VERIFIER_FIELD = CODE_VERIFIER
ELIGIBLE = (SessionStatus.SCHEDULED.value, SessionStatus.JOIN_OPEN.value)
# The retry event lists at most this many sessions (its schema's maxItems); beyond, [] = all.
RETRY_LIST_MAX = 1000


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What the callback's transaction did."""

    outcome: ConnectOutcome
    generation: int
    switch_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class ConnectionSnapshot:
    """The connection as a booking uses it: provider, generation, decrypted tokens."""

    provider: str
    generation: int
    tokens: TokenSet


class GatewayStore:
    """Reads and transactions of the gateway, on one session factory."""

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

    # -- users ------------------------------------------------------------

    def user(self, user_id: uuid.UUID) -> User | None:
        with self._sessions() as s:
            return s.get(User, user_id)

    def users(self, *, limit: int = 100) -> list[User]:
        with self._sessions() as s:
            return list(s.scalars(select(User).order_by(User.role.desc(), User.name).limit(limit)))

    def ping(self) -> None:
        with self._sessions() as s:
            s.execute(text("SELECT 1"))

    # -- OAuth state --------------------------------------------------------

    def create_state(
        self, *, tutor_id: uuid.UUID, provider: str, verifier: str, now: datetime, ttl: timedelta
    ) -> str:
        """Store a fresh single-use state with its encrypted PKCE verifier."""
        state = secrets.token_urlsafe(32)
        with self._sessions() as s, s.begin():
            # Expired states can go: a late callback with one is rejected as unknown
            # instead of expired, which is just as safe. SKIP LOCKED keeps concurrent
            # starts from queueing behind each other's cleanup.
            s.execute(
                text(
                    "DELETE FROM oauth_states WHERE state IN (SELECT state FROM oauth_states "
                    "WHERE expires_at < :now LIMIT 100 FOR UPDATE SKIP LOCKED)"
                ),
                {"now": now},
            )
            s.add(
                OAuthState(
                    state=state,
                    tutor_id=tutor_id,
                    provider=provider,
                    code_verifier_encrypted=self._cipher.encrypt(
                        verifier, tutor_id=tutor_id, field=VERIFIER_FIELD
                    ),
                    created_at=now,
                    expires_at=now + ttl,
                )
            )
        return state

    def consume_state(
        self, *, state: str, tutor_id: uuid.UUID, provider: str, now: datetime
    ) -> str:
        """Mark the state used and return its PKCE verifier; `StateRejected` otherwise."""
        with self._sessions() as s, s.begin():
            row = s.scalars(
                select(OAuthState).where(OAuthState.state == state).with_for_update()
            ).one_or_none()
            if row is None:
                raise StateRejected(
                    "This sign-in link is not one we issued.", reason="state_unknown"
                )
            if row.tutor_id != tutor_id:
                raise StateRejected(
                    "This sign-in was started by another account.", reason="state_other_tutor"
                )
            if row.provider != provider:
                raise StateRejected(
                    "This sign-in was started for another provider.", reason="state_wrong_provider"
                )
            if row.used_at is not None:
                raise StateRejected("This sign-in link was already used.", reason="state_replayed")
            if row.expires_at <= now:
                raise StateRejected("This sign-in link has expired.", reason="state_expired")
            row.used_at = now
            return self._cipher.decrypt(
                row.code_verifier_encrypted, tutor_id=tutor_id, field=VERIFIER_FIELD
            )

    # -- the connection and the switch ---------------------------------------

    def connection(self, tutor_id: uuid.UUID) -> ConnectionView | None:
        with self._sessions() as s:
            row = s.scalars(select(Connection).where(Connection.tutor_id == tutor_id)).one_or_none()
            if row is None:
                return None
            return ConnectionView(
                provider=row.provider,
                generation=row.generation,
                connected_at=row.connected_at,
                provider_account_email=row.provider_account_email,
                previous_provider=row.previous_provider,
                disconnected_at=row.disconnected_at,
                disconnect_reason=row.disconnect_reason,
            )

    def save_connection(
        self,
        *,
        tutor_id: uuid.UUID,
        provider: str,
        tokens: TokenSet,
        account: ProviderAccount,
        now: datetime,
        rollback_grace: timedelta,
    ) -> SaveResult:
        """Upsert the connection; on a provider change record the switch and its event.

        One transaction: the connection row, the switch row and the outbox row
        commit together or not at all.
        """
        with self._sessions() as s, s.begin():
            row = self._lock_connection(s, tutor_id)
            if row is None:
                inserted = s.execute(
                    pg_insert(Connection)
                    .values(
                        tutor_id=tutor_id,
                        provider=provider,
                        **self._current_tokens(tutor_id, tokens),
                        scopes=" ".join(tokens.scopes),
                        provider_account_id=account.id,
                        provider_account_email=account.email,
                        connected_at=now,
                        updated_at=now,
                        generation=1,
                    )
                    .on_conflict_do_nothing(index_elements=["tutor_id"])
                    .returning(Connection.id)
                ).scalar_one_or_none()
                if inserted is not None:
                    return SaveResult(ConnectOutcome.FIRST_CONNECTION, generation=1)
                # Another first connection committed while we waited on the
                # unique index: lock the row it made and treat ours as the later one.
                row = self._lock_connection(s, tutor_id)
                assert row is not None
            outcome = connect_outcome(row.provider, provider)
            if outcome is ConnectOutcome.SWITCHED:
                self._keep_previous(row)
                row.generation += 1
                row.connected_at = now
            self._set_current(row, tutor_id=tutor_id, tokens=tokens, account=account, now=now)
            row.provider = provider
            if outcome is not ConnectOutcome.SWITCHED:
                return SaveResult(outcome, generation=row.generation)
            switch = ProviderSwitch(
                id=uuid.uuid4(),
                tutor_id=tutor_id,
                from_provider=row.previous_provider,
                to_provider=provider,
                generation=row.generation,
                state=SwitchState.PENDING.value,
                created_at=now,
                rollback_deadline=now + rollback_grace,
            )
            s.add(switch)
            s.flush()
            s.add(
                Outbox(
                    **events.outbox_row(
                        events.EventType.PROVIDER_SWITCHED,
                        {
                            "switch_id": str(switch.id),
                            "tutor_id": str(tutor_id),
                            "from_provider": switch.from_provider,
                            "to_provider": provider,
                            "generation": row.generation,
                            "switched_at": now.isoformat(),
                        },
                        tutor_id=str(tutor_id),
                        source=SOURCE,
                        topics=self._topics,
                        time=now,
                    )
                )
            )
            return SaveResult(outcome, generation=row.generation, switch_id=switch.id)

    @staticmethod
    def _lock_connection(s: Session, tutor_id: uuid.UUID) -> Connection | None:
        return s.scalars(
            select(Connection).where(Connection.tutor_id == tutor_id).with_for_update()
        ).one_or_none()

    def _current_tokens(self, tutor_id: uuid.UUID, tokens: TokenSet) -> dict[str, Any]:
        sealed = self._cipher.seal_tokens(
            tokens.access_token, tokens.refresh_token, tutor_id=tutor_id
        )
        return {
            "access_token_encrypted": sealed.access,
            "refresh_token_encrypted": sealed.refresh,
            "token_expires_at": tokens.expires_at,
        }

    def _set_current(
        self,
        row: Connection,
        *,
        tutor_id: uuid.UUID,
        tokens: TokenSet,
        account: ProviderAccount,
        now: datetime,
    ) -> None:
        for name, value in self._current_tokens(tutor_id, tokens).items():
            setattr(row, name, value)
        row.scopes = " ".join(tokens.scopes)
        row.provider_account_id = account.id
        row.provider_account_email = account.email
        row.updated_at = now
        # A fresh consent after the app was removed at the provider reconnects.
        row.disconnected_at = None
        row.disconnect_reason = None

    def _keep_previous(self, row: Connection) -> None:
        """Move the current tokens into the `previous_*` columns (re-bound to those columns)."""
        row.previous_provider = row.provider
        row.previous_access_token_encrypted = self._rebind(
            row, row.access_token_encrypted, "access_token", "previous_access_token"
        )
        row.previous_refresh_token_encrypted = self._rebind(
            row, row.refresh_token_encrypted, "refresh_token", "previous_refresh_token"
        )
        row.previous_token_expires_at = row.token_expires_at
        row.previous_provider_account_id = row.provider_account_id

    def _rebind(
        self, row: Connection, blob: bytes | None, source: str, target: str
    ) -> bytes | None:
        return self._cipher.rebind(blob, tutor_id=row.tutor_id, source=source, target=target)

    # -- switches -----------------------------------------------------------

    def switches(self, tutor_id: uuid.UUID, *, now: datetime, limit: int = 50) -> list[SwitchView]:
        """The tutor's switches, newest first."""
        with self._sessions() as s:
            conn = s.scalars(
                select(Connection).where(Connection.tutor_id == tutor_id)
            ).one_or_none()
            rows = s.scalars(
                select(ProviderSwitch)
                .where(ProviderSwitch.tutor_id == tutor_id)
                .order_by(ProviderSwitch.created_at.desc(), ProviderSwitch.generation.desc())
                .limit(limit)
            ).all()
            return [self._switch_view(row, conn, now=now) for row in rows]

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
            row = s.get(ProviderSwitch, switch_id)
            if row is None or row.tutor_id != tutor_id:
                raise NotFound("no such switch")
            conn = s.scalars(
                select(Connection).where(Connection.tutor_id == tutor_id)
            ).one_or_none()
            view = self._switch_view(row, conn, now=now)
            if with_failures and row.sessions_failed > 0:
                view.failed_sessions = self._failed_sessions(s, switch_id)
            return view

    def _switch_view(
        self, row: ProviderSwitch, conn: Connection | None, *, now: datetime
    ) -> SwitchView:
        waiting = row.waiting_until if row.waiting_until and row.waiting_until > now else None
        progress = Progress(
            state=row.state,
            total=row.sessions_total,
            migrated=row.sessions_migrated,
            failed=row.sessions_failed,
            to_provider=row.to_provider,
            waiting_until=waiting,
        )
        refusal = "no connection" if conn is None else _rollback_refusal(row, conn, now=now)
        return SwitchView(
            id=row.id,
            from_provider=row.from_provider,
            to_provider=row.to_provider,
            generation=row.generation,
            state=row.state,
            sessions_total=row.sessions_total,
            sessions_migrated=row.sessions_migrated,
            sessions_failed=row.sessions_failed,
            sessions_remaining=progress.remaining,
            created_at=row.created_at,
            completed_at=row.completed_at,
            rollback_deadline=row.rollback_deadline,
            rolled_back_at=row.rolled_back_at,
            waiting_until=waiting,
            message=message_view(progress),
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
            conn = self._lock_connection(s, tutor_id)
            row = s.get(ProviderSwitch, switch_id)
            if row is None or row.tutor_id != tutor_id:
                raise NotFound("no such switch")
            if (
                conn is None
                or row.generation != conn.generation
                or row.state
                in (
                    SwitchState.SUPERSEDED.value,
                    SwitchState.ROLLING_BACK.value,
                    SwitchState.ROLLED_BACK.value,
                )
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
            event_id = self._add_event(
                s,
                events.EventType.SESSION_RETRY_REQUESTED,
                {
                    "switch_id": str(switch_id),
                    "tutor_id": str(tutor_id),
                    "session_ids": [str(i) for i in listed],
                    "requested_at": now.isoformat(),
                },
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
        """
        with self._sessions() as s, s.begin():
            conn = self._lock_connection(s, tutor_id)
            row = s.scalars(
                select(ProviderSwitch).where(ProviderSwitch.id == switch_id).with_for_update()
            ).one_or_none()
            if row is None or row.tutor_id != tutor_id:
                raise NotFound("no such switch")
            if conn is None:
                raise RollbackNotAllowed("no connection to roll back")
            refusal = _rollback_refusal(row, conn, now=now)
            if refusal is not None:
                raise RollbackNotAllowed(refusal)
            self._swap_with_previous(conn)
            conn.generation += 1
            conn.connected_at = now
            conn.updated_at = now
            row.state = SwitchState.ROLLING_BACK.value
            event_id = self._add_event(
                s,
                events.EventType.SWITCH_ROLLBACK_REQUESTED,
                {
                    "switch_id": str(switch_id),
                    "tutor_id": str(tutor_id),
                    "to_provider": conn.provider,
                    "generation": conn.generation,
                    "requested_at": now.isoformat(),
                },
                tutor_id=tutor_id,
                now=now,
            )
            return event_id, conn.provider, conn.generation

    def _swap_with_previous(self, conn: Connection) -> None:
        current = (
            conn.provider,
            self._rebind(
                conn, conn.access_token_encrypted, "access_token", "previous_access_token"
            ),
            self._rebind(
                conn, conn.refresh_token_encrypted, "refresh_token", "previous_refresh_token"
            ),
            conn.token_expires_at,
        )
        assert conn.previous_provider is not None
        conn.provider = conn.previous_provider
        restored = self._rebind(
            conn, conn.previous_access_token_encrypted, "previous_access_token", "access_token"
        )
        assert restored is not None
        conn.access_token_encrypted = restored
        conn.refresh_token_encrypted = self._rebind(
            conn, conn.previous_refresh_token_encrypted, "previous_refresh_token", "refresh_token"
        )
        conn.token_expires_at = conn.previous_token_expires_at
        # The ids swap with the tokens (a later app removal must find the
        # restored account); the email we kept was the other provider's.
        conn.provider_account_id, conn.previous_provider_account_id = (
            conn.previous_provider_account_id,
            conn.provider_account_id,
        )
        conn.provider_account_email = None
        (
            conn.previous_provider,
            conn.previous_access_token_encrypted,
            conn.previous_refresh_token_encrypted,
            conn.previous_token_expires_at,
        ) = current

    def _add_event(
        self,
        s: Session,
        event_type: str,
        payload: dict[str, Any],
        *,
        tutor_id: uuid.UUID,
        now: datetime,
    ) -> uuid.UUID:
        values = events.outbox_row(
            event_type,
            payload,
            tutor_id=str(tutor_id),
            source=SOURCE,
            topics=self._topics,
            time=now,
        )
        s.add(Outbox(**values))
        event_id: uuid.UUID = values["event_id"]
        return event_id

    # -- what the providers tell us (event notifications) ----------------------

    @staticmethod
    def _first_time(
        s: Session, *, notification_id: str, provider: str, event: str, now: datetime
    ) -> ProviderNotification | None:
        """Record the notification; None when it was already processed (a replay).

        Inserted first, in the effect's own transaction: a concurrent copy waits
        on the primary key and then finds it, and a rolled-back effect leaves
        no record, so a retry by the provider is processed again.
        """
        inserted = s.execute(
            pg_insert(ProviderNotification)
            .values(id=notification_id, provider=provider, event=event, received_at=now, outcome="")
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(ProviderNotification.id)
        ).scalar_one_or_none()
        if inserted is None:
            return None
        return s.get(ProviderNotification, inserted)

    def deauthorize(
        self,
        *,
        notification_id: str,
        provider: str,
        account_id: str,
        deauthorized_at: datetime,
        now: datetime,
    ) -> str:
        """The tutor removed our app: connection disconnected, tokens erased, tutor told.

        Returns the outcome ("duplicate", "no_connection", "disconnected:N").
        """
        with self._sessions() as s, s.begin():
            record = self._first_time(
                s,
                notification_id=notification_id,
                provider=provider,
                event="app_deauthorized",
                now=now,
            )
            if record is None:
                return "duplicate"
            rows = s.scalars(
                select(Connection)
                .where(
                    Connection.provider == provider, Connection.provider_account_id == account_id
                )
                .order_by(Connection.tutor_id)
                .with_for_update()
            ).all()
            done = 0
            for row in rows:
                if row.access_token_encrypted is None:
                    continue  # already forgotten (an earlier removal)
                row.access_token_encrypted = None
                row.refresh_token_encrypted = None
                row.token_expires_at = None
                row.disconnected_at = deauthorized_at
                row.disconnect_reason = "app_deauthorized"
                row.updated_at = now
                upcoming = s.scalar(
                    select(func.count())
                    .select_from(SessionRow)
                    .where(
                        SessionRow.tutor_id == row.tutor_id,
                        SessionRow.provider == provider,
                        SessionRow.status.in_(ELIGIBLE),
                        SessionRow.scheduled_start_at >= now,
                    )
                )
                self._add_event(
                    s,
                    events.EventType.PROVIDER_DISCONNECTED,
                    {
                        "tutor_id": str(row.tutor_id),
                        "provider": provider,
                        "reason": "app_deauthorized",
                        "upcoming_sessions": int(upcoming or 0),
                        "disconnected_at": deauthorized_at.isoformat(),
                    },
                    tutor_id=row.tutor_id,
                    now=now,
                )
                done += 1
            # A connection kept for rollback on that account loses its tokens
            # too: a rollback would otherwise restore a revoked grant.
            kept = s.scalars(
                select(Connection)
                .where(
                    Connection.previous_provider == provider,
                    Connection.previous_provider_account_id == account_id,
                    Connection.previous_access_token_encrypted.is_not(None),
                )
                .with_for_update()
            ).all()
            for row in kept:
                row.previous_access_token_encrypted = None
                row.previous_refresh_token_encrypted = None
                row.previous_token_expires_at = None
                row.updated_at = now
            record.outcome = (
                f"disconnected:{done}"
                if rows
                else "previous_forgotten"
                if kept
                else "no_connection"
            )
            return record.outcome

    def record_meeting_deletion(
        self,
        *,
        notification_id: str,
        provider: str,
        meeting_id: str,
        deleted_at: datetime,
        now: datetime,
    ) -> str:
        """A meeting was deleted at the provider: record it against the session that uses it.

        Only a session whose CURRENT meeting it is counts, and not one relink
        itself deleted (a rollback's or a cleanup's delete also makes Zoom send
        `meeting.deleted`): those meetings are no longer any session's current
        one, or are recorded as deleted by relink in `session_migrations`.
        """
        with self._sessions() as s, s.begin():
            record = self._first_time(
                s,
                notification_id=notification_id,
                provider=provider,
                event="meeting.deleted",
                now=now,
            )
            if record is None:
                return "duplicate"
            sessions = s.scalars(
                select(SessionRow).where(
                    SessionRow.provider == provider,
                    SessionRow.meeting_external_id == meeting_id,
                    SessionRow.status.in_(ELIGIBLE),
                    SessionRow.scheduled_start_at >= now,
                )
            ).all()
            if not sessions or self._deleted_by_relink(s, meeting_id):
                record.outcome = "ignored"
                return record.outcome
            for row in sessions:
                s.execute(
                    pg_insert(MeetingDeletion)
                    .values(
                        session_id=row.id,
                        tutor_id=row.tutor_id,
                        provider=provider,
                        meeting_external_id=meeting_id,
                        deleted_at=deleted_at,
                        recorded_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["session_id", "meeting_external_id"])
                )
            record.outcome = f"recorded:{len(sessions)}"
            return record.outcome

    def save_channel(
        self,
        *,
        tutor_id: uuid.UUID,
        provider: str,
        channel_id: str,
        token_sha256: str,
        resource_id: str,
        generation: int,
        expires_at: datetime,
        now: datetime,
    ) -> None:
        """Remember a push-notification channel opened for the tutor's connection."""
        with self._sessions() as s, s.begin():
            s.add(
                ProviderChannel(
                    id=channel_id,
                    tutor_id=tutor_id,
                    provider=provider,
                    token_sha256=token_sha256,
                    resource_id=resource_id,
                    generation=generation,
                    expires_at=expires_at,
                    created_at=now,
                )
            )

    def channel(self, channel_id: str) -> ProviderChannel | None:
        with self._sessions() as s:
            return s.get(ProviderChannel, channel_id)

    def watched_meetings(
        self, *, tutor_id: uuid.UUID, provider: str, now: datetime, limit: int = 200
    ) -> list[tuple[uuid.UUID, str]]:
        """(session id, meeting id) of the tutor's upcoming sessions on `provider`."""
        with self._sessions() as s:
            rows = s.execute(
                select(SessionRow.id, SessionRow.meeting_external_id)
                .where(
                    SessionRow.tutor_id == tutor_id,
                    SessionRow.provider == provider,
                    SessionRow.meeting_external_id.is_not(None),
                    SessionRow.status.in_(ELIGIBLE),
                    SessionRow.scheduled_start_at >= now,
                )
                .order_by(SessionRow.scheduled_start_at)
                .limit(limit)
            ).all()
            return [(r[0], str(r[1])) for r in rows]

    def take_channel_message(self, *, channel_id: str, number: int) -> bool:
        """Advance the channel's message number; False for a number already seen (a replay)."""
        with self._sessions() as s, s.begin():
            advanced = s.execute(
                text(
                    "UPDATE provider_channels SET last_message_number = :n "
                    "WHERE id = :id AND last_message_number < :n RETURNING id"
                ),
                {"id": channel_id, "n": number},
            ).first()
            return advanced is not None

    def record_deleted_events(
        self,
        *,
        tutor_id: uuid.UUID,
        provider: str,
        gone: list[tuple[uuid.UUID, str]],
        now: datetime,
    ) -> int:
        """Record events found gone at the provider against sessions that still use them."""
        recorded = 0
        with self._sessions() as s, s.begin():
            for session_id, meeting_id in gone:
                session = s.get(SessionRow, session_id)
                if (
                    session is None
                    or session.tutor_id != tutor_id
                    or session.meeting_external_id != meeting_id
                    or self._deleted_by_relink(s, meeting_id)
                ):
                    continue
                inserted = s.execute(
                    pg_insert(MeetingDeletion)
                    .values(
                        session_id=session_id,
                        tutor_id=tutor_id,
                        provider=provider,
                        meeting_external_id=meeting_id,
                        deleted_at=now,
                        recorded_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["session_id", "meeting_external_id"])
                    .returning(MeetingDeletion.id)
                ).scalar_one_or_none()
                recorded += inserted is not None
        return recorded

    @staticmethod
    def _deleted_by_relink(s: Session, meeting_id: str) -> bool:
        """Whether a rollback or a cleanup of relink's recorded deleting this meeting."""
        return bool(
            s.scalar(
                select(func.count())
                .select_from(SessionMigration)
                .where(
                    (
                        (SessionMigration.new_meeting_external_id == meeting_id)
                        & (SessionMigration.new_meeting_deleted_at.is_not(None))
                    )
                    | (
                        (SessionMigration.previous_meeting_external_id == meeting_id)
                        & (SessionMigration.previous_meeting_deleted_at.is_not(None))
                    )
                )
            )
        )

    def open_deletions(self, tutor_id: uuid.UUID, *, now: datetime) -> list[DeletedMeetingView]:
        """The tutor's upcoming sessions whose current meeting was deleted at the provider."""
        with self._sessions() as s:
            rows = s.execute(
                select(MeetingDeletion, SessionRow.scheduled_start_at, Booking.topic, User.name)
                .join(SessionRow, SessionRow.id == MeetingDeletion.session_id)
                .join(Booking, Booking.id == SessionRow.booking_id)
                .join(User, User.id == SessionRow.student_id)
                .where(
                    MeetingDeletion.tutor_id == tutor_id,
                    MeetingDeletion.resolved_at.is_(None),
                    # Still the session's meeting: a move or a rollback since replaced it.
                    SessionRow.meeting_external_id == MeetingDeletion.meeting_external_id,
                    SessionRow.provider == MeetingDeletion.provider,
                    SessionRow.status.in_(ELIGIBLE),
                    SessionRow.scheduled_start_at >= now,
                )
                .order_by(SessionRow.scheduled_start_at)
                .limit(100)
            ).all()
            return [
                DeletedMeetingView(
                    id=d.id,
                    session_id=d.session_id,
                    provider=d.provider,
                    meeting_external_id=d.meeting_external_id,
                    deleted_at=d.deleted_at,
                    scheduled_start_at=start,
                    topic=topic,
                    student_name=student,
                )
                for d, start, topic, student in rows
            ]

    def deletion(self, *, tutor_id: uuid.UUID, session_id: uuid.UUID) -> MeetingDeletion | None:
        """The open deletion of one of the tutor's sessions that still uses that meeting."""
        with self._sessions() as s:
            return s.scalars(
                select(MeetingDeletion)
                .join(SessionRow, SessionRow.id == MeetingDeletion.session_id)
                .where(
                    MeetingDeletion.session_id == session_id,
                    MeetingDeletion.tutor_id == tutor_id,
                    MeetingDeletion.resolved_at.is_(None),
                    SessionRow.meeting_external_id == MeetingDeletion.meeting_external_id,
                )
                .order_by(MeetingDeletion.id.desc())
                .limit(1)
            ).one_or_none()

    def replace_deleted_meeting(
        self,
        *,
        deletion_id: int,
        tutor_id: uuid.UUID,
        meeting: Meeting,
        generation: int,
        now: datetime,
    ) -> bool:
        """Give the session its re-created meeting, unless anything changed since it was made.

        The connection row is locked (the per-tutor lock every writer takes):
        a switch that committed meanwhile moves the session itself (False:
        the caller deletes the meeting it made).
        """
        with self._sessions() as s, s.begin():
            conn = self._lock_connection(s, tutor_id)
            deletion = s.get(MeetingDeletion, deletion_id, with_for_update=True)
            if (
                conn is None
                or deletion is None
                or deletion.resolved_at is not None
                or conn.generation != generation
                or conn.provider != meeting.provider
            ):
                return False
            session = s.get(SessionRow, deletion.session_id, with_for_update=True)
            if (
                session is None
                or session.meeting_external_id != deletion.meeting_external_id
                or session.status not in ELIGIBLE
            ):
                return False
            session.meeting_external_id = meeting.external_id
            session.join_url = meeting.join_url
            session.provider = meeting.provider
            session.meeting_created_at = now
            session.updated_at = now
            deletion.resolved_at = now
            deletion.new_meeting_external_id = meeting.external_id
            if meeting.join_url:
                self._add_event(
                    s,
                    events.EventType.SESSION_MEETING_RECREATED,
                    {
                        "tutor_id": str(tutor_id),
                        "session_id": str(session.id),
                        "student_id": str(session.student_id),
                        "scheduled_start_at": session.scheduled_start_at.isoformat(),
                        "provider": meeting.provider,
                        "meeting_external_id": meeting.external_id,
                        "join_url": meeting.join_url,
                        "deleted_meeting_external_id": deletion.meeting_external_id,
                        "recreated_at": now.isoformat(),
                    },
                    tutor_id=tutor_id,
                    now=now,
                )
            return True

    # -- sessions and bookings ------------------------------------------------

    def upcoming_sessions(
        self,
        *,
        now: datetime,
        tutor_id: uuid.UUID | None = None,
        student_id: uuid.UUID | None = None,
        limit: int = 100,
    ) -> list[SessionView]:
        """Scheduled sessions that have not started, soonest first, with their join links."""
        tutor = User.__table__.alias("tutor")
        student = User.__table__.alias("student")
        query = (
            select(SessionRow, Booking.topic, tutor.c.name, student.c.name)
            .join(Booking, Booking.id == SessionRow.booking_id)
            .join(tutor, tutor.c.id == SessionRow.tutor_id)
            .join(student, student.c.id == SessionRow.student_id)
            .where(SessionRow.status.in_(ELIGIBLE), SessionRow.scheduled_start_at >= now)
            .order_by(SessionRow.scheduled_start_at)
            .limit(limit)
        )
        if tutor_id is not None:
            query = query.where(SessionRow.tutor_id == tutor_id)
        if student_id is not None:
            query = query.where(SessionRow.student_id == student_id)
        with self._sessions() as s:
            return [
                SessionView(
                    id=row.id,
                    booking_id=row.booking_id,
                    tutor_id=row.tutor_id,
                    student_id=row.student_id,
                    tutor_name=tutor_name,
                    student_name=student_name,
                    topic=topic,
                    status=row.status,
                    provider=row.provider,
                    join_url=row.join_url,
                    scheduled_start_at=row.scheduled_start_at,
                    duration_minutes=row.duration_minutes,
                )
                for row, topic, tutor_name, student_name in s.execute(query).all()
            ]

    def connection_snapshot_or_none(self, tutor_id: uuid.UUID) -> ConnectionSnapshot | None:
        """The snapshot, or None when there is no connection or its tokens were forgotten."""
        try:
            return self.connection_snapshot(tutor_id)
        except NoConnection:
            return None

    def booking(self, booking_id: uuid.UUID) -> Booking | None:
        with self._sessions() as s:
            return s.get(Booking, booking_id)

    def connection_snapshot(self, tutor_id: uuid.UUID) -> ConnectionSnapshot | None:
        """The current provider, generation and tokens (decrypted) for creating a meeting."""
        with self._sessions() as s:
            row = s.scalars(select(Connection).where(Connection.tutor_id == tutor_id)).one_or_none()
            if row is None:
                return None
            if row.access_token_encrypted is None:
                raise NoConnection(
                    f"relink's app was removed at {PROVIDER_LABELS.get(row.provider, row.provider)}"
                    "; reconnect it before accepting bookings"
                )
            opened = self._cipher.open_tokens(
                row.access_token_encrypted, row.refresh_token_encrypted, tutor_id=tutor_id
            )
            return ConnectionSnapshot(
                provider=row.provider,
                generation=row.generation,
                tokens=TokenSet(
                    access_token=opened.access,
                    refresh_token=opened.refresh,
                    expires_at=row.token_expires_at or datetime.max.replace(tzinfo=UTC),
                    scopes=tuple(row.scopes.split()),
                ),
            )

    def save_refreshed_tokens(
        self, *, tutor_id: uuid.UUID, generation: int, tokens: TokenSet, now: datetime
    ) -> bool:
        """Persist tokens a refresh rotated, unless a switch replaced the connection meanwhile."""
        with self._sessions() as s, s.begin():
            row = self._lock_connection(s, tutor_id)
            if row is None or row.generation != generation:
                return False
            for name, value in self._current_tokens(tutor_id, tokens).items():
                setattr(row, name, value)
            row.updated_at = now
            return True

    def record_booking(
        self,
        *,
        booking_id: uuid.UUID,
        session_id: uuid.UUID,
        tutor_id: uuid.UUID,
        student_id: uuid.UUID,
        topic: str,
        start: datetime,
        duration_minutes: int,
        timezone: str,
        meeting: Meeting,
        generation: int,
        now: datetime,
    ) -> bool:
        """Insert the booking and its session unless the connection changed since the meeting.

        The connection row is locked, so a switch either committed before
        (we see its generation and return False: the caller makes the meeting
        again at the new provider) or commits after (its migration finds this
        session on the old provider and moves it).
        """
        with self._sessions() as s, s.begin():
            row = self._lock_connection(s, tutor_id)
            if row is None or row.generation != generation or row.provider != meeting.provider:
                return False
            s.add(
                Booking(
                    id=booking_id,
                    tutor_id=tutor_id,
                    student_id=student_id,
                    topic=topic,
                    duration_minutes=duration_minutes,
                    timezone=timezone,
                )
            )
            s.flush()
            s.add(
                SessionRow(
                    id=session_id,
                    tutor_id=tutor_id,
                    student_id=student_id,
                    booking_id=booking_id,
                    provider=meeting.provider,
                    meeting_external_id=meeting.external_id,
                    join_url=meeting.join_url,
                    status=SessionStatus.SCHEDULED.value,
                    scheduled_start_at=start,
                    duration_minutes=duration_minutes,
                    meeting_created_at=now,
                )
            )
            return True


def _rollback_refusal(row: ProviderSwitch, conn: Connection, *, now: datetime) -> str | None:
    """Why this switch cannot be rolled back now (None: it can)."""
    return rollback_allowed(
        switch_state=row.state,
        switch_generation=row.generation,
        connection_generation=conn.generation,
        connection_provider=conn.provider,
        switch_to_provider=row.to_provider,
        has_previous_tokens=conn.previous_access_token_encrypted is not None,
        deadline=row.rollback_deadline,
        now=now,
    )
