"""Who is asking, what a switch is and what the tutor is told about it (pure: no I/O).

The brief's bug was deciding "is this a switch?" by comparing with one fixed
provider; here a switch is any change from one provider to a different one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from services.core import switching
from services.core.db.models import SessionStatus, SwitchState

# The switch's rules live in core.switching; the page asks the same questions there.
IN_FLIGHT_STATES = switching.IN_FLIGHT
FINAL_STATES = switching.SETTLED

# A switch's state in the tutor's words: what the page and the JSON API's `state_label`
# show. The enum value stays in `state` and in data attributes, for machines only.
STATE_LABELS: dict[str, str] = {
    SwitchState.PENDING: "Starting: your sessions will be updated shortly",
    SwitchState.PLANNING: "Preparing to update your sessions",
    SwitchState.MIGRATING: "Updating your sessions",
    SwitchState.COMPLETED: "Done",
    SwitchState.COMPLETED_WITH_FAILURES: "Done, but some sessions need attention",
    SwitchState.SUPERSEDED: "Replaced by a newer switch",
    SwitchState.ROLLING_BACK: "Rolling back to your previous provider",
    SwitchState.ROLLED_BACK: "Rolled back: your previous provider is active again",
}

PROVIDER_LABELS = {"zoom": "Zoom", "google_meet": "Google Meet"}

CONNECTED = "Successfully connected video provider!"

Role = Literal["tutor", "student"]
ROLES: tuple[Role, ...] = ("tutor", "student")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: the signed-in user's id and role (from the platform's sign-in token)."""

    user_id: uuid.UUID
    role: Role
    expires_at: int


class ConnectOutcome(StrEnum):
    """What a successful OAuth callback did to the tutor's connection."""

    FIRST_CONNECTION = "first_connection"
    RECONNECTED = "reconnected"  # same provider again: fresh tokens, nothing migrates
    SWITCHED = "switched"


def connect_outcome(previous_provider: str | None, new_provider: str) -> ConnectOutcome:
    """Decide what connecting `new_provider` means given the previous provider."""
    if previous_provider is None:
        return ConnectOutcome.FIRST_CONNECTION
    if previous_provider == new_provider:
        return ConnectOutcome.RECONNECTED
    return ConnectOutcome.SWITCHED


@dataclass(frozen=True, slots=True)
class Progress:
    """A switch's totals as the page shows them."""

    state: str
    total: int
    migrated: int
    failed: int
    to_provider: str | None = None
    # Set while the rest waits for the new provider's daily limit to reset.
    waiting_until: datetime | None = None

    @property
    def remaining(self) -> int:
        return max(self.total - self.migrated - self.failed, 0)

    @property
    def in_flight(self) -> bool:
        return self.state in IN_FLIGHT_STATES

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True, slots=True)
class Message:
    """One banner of the video-setup page: its kind (for styling and tests) and lines."""

    # success | success_migrated | warning | in_progress | waiting | rolling_back | rolled_back
    kind: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


def migrated_line(count: int) -> str:
    noun = "session was" if count == 1 else "sessions were"
    return f"🔄 {count} future {noun} automatically updated with new meeting links."


WARNING_LINE = (
    "⚠️ Some future sessions may need to be manually updated. Please check your sessions page."
)


def waiting_lines(progress: Progress) -> tuple[str, ...]:
    """What moved, and when the rest will: the new provider's daily limit is spent."""
    name = PROVIDER_LABELS.get(progress.to_provider or "", "The new provider")
    until = progress.waiting_until
    when = f"{until:%A} {until.day} {until:%B %Y, %H:%M} UTC" if until else "its reset"
    noun = "session" if progress.remaining == 1 else "sessions"
    return (
        migrated_line(progress.migrated),
        f"⏳ {name}'s daily limit on new meetings is reached: the remaining "
        f"{progress.remaining} {noun} will move after {when}, soonest first. "
        "Their students keep the current link until then; nothing to do on your side.",
    )


def state_label(state: str) -> str:
    """A switch's state as the tutor reads it (never the raw enum value)."""
    return STATE_LABELS.get(state, "Unknown: please reload the page")


def notice_applies(notice: str | None, state: str | None) -> bool:
    """Whether the page's one-off notice after a button still describes the switch.

    "Rolling back to your previous provider…" is true only while the rollback
    runs: the page reloads with the same address once it ended, and must not
    then say "rolling back" next to "Switch rolled back".
    """
    if notice == "rollback_requested":
        return state == SwitchState.ROLLING_BACK
    return notice is not None


def switch_message(progress: Progress | None) -> Message:
    """The brief's messages: success with N updated, the warning, or plain success."""
    if progress is None:
        return Message("success", (CONNECTED,))
    if progress.state == SwitchState.ROLLED_BACK:
        return Message(
            "rolled_back", ("↩️ Switch rolled back: your previous provider is active again.",)
        )
    if progress.state == SwitchState.ROLLING_BACK:
        return Message("rolling_back", ("↩️ Rolling back: restoring your previous meeting links…",))
    if progress.in_flight and progress.waiting_until is not None:
        return Message("waiting", (f"✅ {CONNECTED}", *waiting_lines(progress)))
    if progress.in_flight:
        return Message(
            "in_progress",
            (f"✅ {CONNECTED}", "🔄 Updating your future sessions with new meeting links…"),
        )
    if progress.failed > 0:
        return Message("warning", (f"✅ {CONNECTED}", WARNING_LINE))
    if progress.migrated > 0:
        return Message("success_migrated", (f"✅ {CONNECTED}", migrated_line(progress.migrated)))
    return Message("success", (CONNECTED,))


# How far ahead a session may be booked (a year-9999 start overflowed the
# provider client's end-time arithmetic and answered a bare 500).
BOOKING_HORIZON_YEARS = 10


def booking_refusal(start: datetime, *, now: datetime) -> str | None:
    """None when a session may be booked to start at `start`; otherwise why not.

    A meeting for a time already past is of no use to anyone: refused before
    any meeting is requested at the provider.
    """
    if start.tzinfo is None:
        return "scheduled_start_at needs a time zone offset, e.g. 2030-01-10T09:00:00+01:00"
    if start <= now:
        return (
            f"scheduled_start_at {start.isoformat()} is in the past: a session can only be "
            f"booked to start later than now ({now.astimezone(UTC):%Y-%m-%d %H:%M} UTC)"
        )
    if start.year > now.year + BOOKING_HORIZON_YEARS:
        return (
            f"scheduled_start_at {start.isoformat()} is too far ahead: sessions are booked "
            f"at most {BOOKING_HORIZON_YEARS} years ahead"
        )
    return None


def rollback_allowed(
    *,
    switch_state: str,
    switch_generation: int,
    connection_generation: int,
    connection_provider: str,
    switch_to_provider: str,
    has_previous_tokens: bool,
    deadline: datetime | None,
    now: datetime,
) -> str | None:
    """None when a rollback may start; otherwise why not (shown to the tutor)."""
    if switch_state in (SwitchState.ROLLING_BACK, SwitchState.ROLLED_BACK):
        return "this switch is already rolled back"
    if switch_state == SwitchState.SUPERSEDED or switch_generation != connection_generation:
        return "a newer switch replaced this one"
    if connection_provider != switch_to_provider:
        return "the connection no longer uses this switch's provider"
    if deadline is None or now >= deadline:
        return "the rollback grace period is over"
    if not has_previous_tokens:
        return "the previous connection is no longer kept"
    return None


# What each scope relink requests lets it do, in the tutor's words (the
# missing-permission page names these, never the raw scope strings alone).
SCOPE_LABELS = {
    "https://www.googleapis.com/auth/calendar.events": "Google Calendar events",
    "openid": "your Google account id (sign-in)",
    "email": "your Google account's email address",
    "meeting:write:meeting": "creating Zoom meetings",
    "meeting:read:meeting": "reading Zoom meetings",
    "meeting:read:list_meetings": "listing your Zoom meetings",
    "meeting:delete:meeting": "deleting Zoom meetings",
    "user:read:user": "your Zoom profile (account id and email)",
}

# Granted scopes that also cover a requested one. Google's token response
# spells `email` as its full URL and the broader `calendar` scope includes
# `calendar.events` (Google OAuth 2.0 Scopes for Google APIs; Calendar API v3
# "Choose Google Calendar API scopes").
_COVERED_BY = {
    "email": frozenset({"email", "https://www.googleapis.com/auth/userinfo.email"}),
    "profile": frozenset({"profile", "https://www.googleapis.com/auth/userinfo.profile"}),
    "https://www.googleapis.com/auth/calendar.events": frozenset(
        {
            "https://www.googleapis.com/auth/calendar.events",
            "https://www.googleapis.com/auth/calendar",
        }
    ),
}


def missing_scopes(requested: str, granted: tuple[str, ...]) -> tuple[str, ...]:
    """The requested scopes the token response does not grant, in request order.

    RFC 6749 §5.1: a token response may omit `scope` only when it is exactly
    what was requested, so an empty `granted` means everything was granted.
    """
    if not granted:
        return ()
    have = set(granted)
    return tuple(
        scope
        for scope in requested.split()
        if not (_COVERED_BY.get(scope, frozenset({scope})) & have)
    )


def scope_label(scope: str) -> str:
    """A scope in the tutor's words (the raw scope when we have none)."""
    return SCOPE_LABELS.get(scope, scope)


# -- a session's life, as the platform reports it (the service API) -------------

_SESSION_ORDER = {
    SessionStatus.SCHEDULED: 0,
    SessionStatus.JOIN_OPEN: 1,
    SessionStatus.IN_PROGRESS: 2,
    SessionStatus.COMPLETED: 3,
    SessionStatus.NO_SHOW: 3,
    SessionStatus.CANCELLED: 3,
}


def status_change_refusal(before: str, after: str) -> str | None:
    """Why a session may not go from `before` to `after`, or None if it may.

    Forward only (SCHEDULED → JOIN_OPEN → IN_PROGRESS → COMPLETED / NO_SHOW),
    CANCELLED from any state before an end, nothing after an end. The same
    status again is allowed (a repeat changes nothing).
    """
    old, new = SessionStatus(before), SessionStatus(after)
    if old == new:
        return None
    if _SESSION_ORDER[old] == 3:
        return f"the session is {old.value}; it cannot become {new.value}"
    if _SESSION_ORDER[new] < _SESSION_ORDER[old]:
        return f"the session is {old.value}; it cannot go back to {new.value}"
    return None
