"""The gateway's PostgreSQL adapter, one module per concern.

- `users`: the users the gateway shows, and the liveness probe;
- `oauth_states`: single-use OAuth states and their PKCE verifiers;
- `connections`: the tutor's connection and its tokens, and the switch transaction;
- `switches`: switch views, retry and rollback requests;
- `notifications`: what the providers tell us (app removals, meeting deletions);
- `channels`: push-notification (watch) channels;
- `deletions`: meetings deleted at the provider and their replacement;
- `bookings`: bookings and their sessions;
- `common`: the per-tutor lock, token columns and the outbox write they share.

`GatewayStore` composes the parts on one session factory and exposes their
methods under the names the service has always called.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from services.core import events
from services.core.tokens import TokenCipher
from services.oauth_gateway.adapters.db.bookings import BookingStore
from services.oauth_gateway.adapters.db.channels import ChannelStore
from services.oauth_gateway.adapters.db.connections import (
    ConnectionSnapshot,
    ConnectionStore,
    SaveResult,
)
from services.oauth_gateway.adapters.db.deletions import DeletionStore
from services.oauth_gateway.adapters.db.notifications import NotificationStore
from services.oauth_gateway.adapters.db.oauth_states import OAuthStateStore
from services.oauth_gateway.adapters.db.switches import SwitchStore
from services.oauth_gateway.adapters.db.users import UserStore

__all__ = [
    "BookingStore",
    "ChannelStore",
    "ConnectionSnapshot",
    "ConnectionStore",
    "DeletionStore",
    "GatewayStore",
    "NotificationStore",
    "OAuthStateStore",
    "SaveResult",
    "SwitchStore",
    "UserStore",
]


class GatewayStore:
    """The gateway's stores on one session factory (composition, no logic of its own)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        cipher: TokenCipher,
        topics: events.TopicNames,
    ) -> None:
        self.session_factory = session_factory
        self.user_store = UserStore(session_factory)
        self.state_store = OAuthStateStore(session_factory, cipher=cipher)
        self.connection_store = ConnectionStore(session_factory, cipher=cipher, topics=topics)
        self.switch_store = SwitchStore(session_factory, cipher=cipher, topics=topics)
        self.notification_store = NotificationStore(session_factory, topics=topics)
        self.channel_store = ChannelStore(session_factory)
        self.deletion_store = DeletionStore(session_factory, topics=topics)
        self.booking_store = BookingStore(session_factory)

        self.user = self.user_store.user
        self.users = self.user_store.users
        self.ping = self.user_store.ping

        self.create_state = self.state_store.create_state
        self.consume_state = self.state_store.consume_state

        self.connection = self.connection_store.connection
        self.save_connection = self.connection_store.save_connection
        self.connection_snapshot = self.connection_store.connection_snapshot
        self.connection_snapshot_or_none = self.connection_store.connection_snapshot_or_none
        self.save_refreshed_tokens = self.connection_store.save_refreshed_tokens

        self.switches = self.switch_store.switches
        self.switch = self.switch_store.switch
        self.request_retry = self.switch_store.request_retry
        self.request_rollback = self.switch_store.request_rollback

        self.deauthorize = self.notification_store.deauthorize
        self.record_meeting_deletion = self.notification_store.record_meeting_deletion

        self.save_channel = self.channel_store.save_channel
        self.channel = self.channel_store.channel
        self.watched_meetings = self.channel_store.watched_meetings
        self.take_channel_message = self.channel_store.take_channel_message

        self.record_deleted_events = self.deletion_store.record_deleted_events
        self.open_deletions = self.deletion_store.open_deletions
        self.deletion = self.deletion_store.deletion
        self.replace_deleted_meeting = self.deletion_store.replace_deleted_meeting

        self.upcoming_sessions = self.booking_store.upcoming_sessions
        self.booking = self.booking_store.booking
        self.record_booking = self.booking_store.record_booking
