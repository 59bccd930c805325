"""The tutor's connection and its tokens, and the switch transaction.

The switch is one transaction (`save_connection`): lock the tutor's
connection row, upsert the connection, and for a switch insert the
`switch_requests` row and the `provider.switched` outbox row. A callback
racing another for the same tutor waits on the row lock (or, for a first
connection, on the unique index) and then sees the winner's row.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from services.core import events, outbox, tracing
from services.core.db.models import Connection, SwitchRequest
from services.core.logs import get_logger
from services.core.messages import ProviderSwitched, message_row
from services.core.tokens import TokenCipher, TokenDecryptError
from services.oauth_gateway.adapters.db.common import (
    SOURCE,
    current_tokens,
    lock_connection,
    rebind,
)
from services.oauth_gateway.adapters.web.views import ConnectionView
from services.oauth_gateway.domain import PROVIDER_LABELS, ConnectOutcome, connect_outcome
from services.oauth_gateway.errors import ConnectionUnreadable, NoConnection
from services.providers import ProviderAccount, TokenSet

log = get_logger(__name__)


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


class ConnectionStore:
    """Reads and writes the tutor's connection row and the tokens it holds."""

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
            row = lock_connection(s, tutor_id)
            if row is None:
                inserted = s.execute(
                    pg_insert(Connection)
                    .values(
                        tutor_id=tutor_id,
                        provider=provider,
                        **current_tokens(self._cipher, tutor_id, tokens),
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
                row = lock_connection(s, tutor_id)
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
            # The request only: the migrator makes the switch's progress row
            # (`provider_switches`) when it handles `provider.switched`.
            switch = SwitchRequest(
                id=uuid.uuid4(),
                tutor_id=tutor_id,
                from_provider=row.previous_provider,
                to_provider=provider,
                generation=row.generation,
                requested_at=now,
                rollback_deadline=now + rollback_grace,
            )
            s.add(switch)
            s.flush()
            outbox.append(
                s,
                tutor_id,
                [
                    message_row(
                        ProviderSwitched(
                            switch_id=str(switch.id),
                            tutor_id=str(tutor_id),
                            from_provider=switch.from_provider,
                            to_provider=provider,
                            generation=row.generation,
                            switched_at=now,
                        ),
                        tutor_id=str(tutor_id),
                        source=SOURCE,
                        topics=self._topics,
                        time=now,
                        # so the switch's trace context is found by the switch id
                        event_id=tracing.switch_event_id(switch.id),
                    )
                ],
            )
            return SaveResult(outcome, generation=row.generation, switch_id=switch.id)

    def _set_current(
        self,
        row: Connection,
        *,
        tutor_id: uuid.UUID,
        tokens: TokenSet,
        account: ProviderAccount,
        now: datetime,
    ) -> None:
        for name, value in current_tokens(self._cipher, tutor_id, tokens).items():
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
        row.previous_access_token_encrypted = rebind(
            self._cipher, row, row.access_token_encrypted, "access_token", "previous_access_token"
        )
        row.previous_refresh_token_encrypted = rebind(
            self._cipher,
            row,
            row.refresh_token_encrypted,
            "refresh_token",
            "previous_refresh_token",
        )
        row.previous_token_expires_at = row.token_expires_at
        row.previous_provider_account_id = row.provider_account_id
        row.previous_provider_account_email = row.provider_account_email

    def connection_snapshot_or_none(self, tutor_id: uuid.UUID) -> ConnectionSnapshot | None:
        """The snapshot, or None when there is no connection or its tokens were forgotten."""
        try:
            return self.connection_snapshot(tutor_id)
        except NoConnection:
            return None

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
            try:
                opened = self._cipher.open_tokens(
                    row.access_token_encrypted, row.refresh_token_encrypted, tutor_id=tutor_id
                )
            except TokenDecryptError as exc:
                # The operator's problem (a key missing from RELINK_TOKEN_KEYS, a
                # row copied from elsewhere), logged for them; the tutor can fix it
                # by connecting again, which stores tokens this process can read.
                log.error("tutor %s: the stored connection does not decrypt: %s", tutor_id, exc)
                raise ConnectionUnreadable(
                    "relink cannot read your saved video provider connection; "
                    "please connect your provider again"
                ) from exc
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
            row = lock_connection(s, tutor_id)
            if row is None or row.generation != generation:
                return False
            for name, value in current_tokens(self._cipher, tutor_id, tokens).items():
                setattr(row, name, value)
            row.updated_at = now
            return True
