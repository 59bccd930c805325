"""What the provider clients take and return: plain values, no I/O."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

ProviderName = Literal["zoom", "google_meet"]


@dataclass(frozen=True, slots=True)
class TokenSet:
    """Tokens from a code exchange or refresh; token values stay out of repr."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime
    scopes: tuple[str, ...] = ()
    token_type: str = "Bearer"

    def expired(self, *, now: datetime | None = None, leeway_s: float = 60.0) -> bool:
        """Whether the access token is (about to be) past its expiry."""
        now = now or datetime.now(UTC)
        return now + timedelta(seconds=leeway_s) >= self.expires_at


@dataclass(frozen=True, slots=True)
class ProviderAccount:
    """The provider account behind a token, for the connection row."""

    id: str
    email: str


@dataclass(frozen=True, slots=True)
class MeetingRequest:
    """What a session's meeting needs; `switch_id` + `session_id` make retries idempotent."""

    switch_id: str
    session_id: str
    topic: str
    start_time: datetime
    duration_min: int
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class Meeting:
    """A meeting at the provider: its id there and the link students join with."""

    provider: ProviderName
    external_id: str
    join_url: str | None
    start_time: datetime | None = None


def idempotency_key(switch_id: str, session_id: str) -> str:
    """A stable key for one (switch, session): the same inputs give the same key."""
    return hashlib.sha256(f"relink:{switch_id}:{session_id}".encode()).hexdigest()


def meeting_marker(switch_id: str, session_id: str) -> str:
    """The text that marks the meeting relink made for one (switch, session), delimiters included.

    Zoom has no idempotency key, so the marker rides in the meeting's `agenda`
    (which Zoom's "List meetings" returns) and a retry finds the meeting an
    unanswered create made. Only our ids: no token, nothing about the people.
    The brackets keep `session-1` from matching inside `session-10`.
    """
    return f"[relink:{switch_id}:{session_id}]"


def google_event_id(switch_id: str, session_id: str) -> str:
    """A client-chosen Calendar event id for one (switch, session).

    Google accepts ids of 5-1024 characters from base32hex (a-v, 0-9)
    (Calendar API, Events resource, `id`), so a retried insert gets a 409
    instead of making a second event.
    """
    digest = hashlib.sha256(f"relink:{switch_id}:{session_id}".encode()).digest()
    return base64.b32hexencode(digest).decode().rstrip("=").lower()
