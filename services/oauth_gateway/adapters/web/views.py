"""What the gateway's pages and JSON APIs show: plain pydantic values (no I/O)."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Literal
from zoneinfo import available_timezones

from markupsafe import Markup
from pydantic import AfterValidator, BaseModel, Field, computed_field

from services.core.db.models import SessionStatus, SwitchState
from services.oauth_gateway.domain import Progress, state_label, switch_message


class ConnectionView(BaseModel):
    """The tutor's current video-provider connection (never its tokens)."""

    provider: str
    generation: int
    connected_at: datetime
    provider_account_email: str | None = None
    previous_provider: str | None = None
    # Set when the tutor removed relink's app at the provider: reconnect required.
    disconnected_at: datetime | None = None
    disconnect_reason: str | None = None

    @property
    def reconnect_required(self) -> bool:
        return self.disconnected_at is not None


class FailedSessionView(BaseModel):
    """A session a switch could not move, and why."""

    session_id: uuid.UUID
    scheduled_start_at: datetime
    topic: str | None = None
    student_name: str | None = None
    reason: str | None = None
    attempts: int = 0


class MessageView(BaseModel):
    kind: str
    lines: list[str]


class SwitchView(BaseModel):
    """One switch with its progress; what the page polls and the history lists."""

    id: uuid.UUID
    from_provider: str
    to_provider: str
    generation: int
    # The machine value (a `SwitchState`); `state_label` is what a tutor reads.
    state: str
    sessions_total: int
    sessions_migrated: int
    sessions_failed: int
    sessions_remaining: int
    created_at: datetime
    completed_at: datetime | None = None
    rollback_deadline: datetime | None = None
    rolled_back_at: datetime | None = None
    # When the remaining sessions will move (the new provider's daily limit).
    waiting_until: datetime | None = None
    message: MessageView
    can_roll_back: bool = False
    failed_sessions: list[FailedSessionView] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def state_label(self) -> str:
        """The state in the tutor's words (pages and the JSON API show this, never `state`)."""
        return state_label(self.state)

    @property
    def in_flight(self) -> bool:
        return self.progress.in_flight

    @property
    def watched(self) -> bool:
        """Whether the page keeps polling: a migration or a rollback is running."""
        return self.in_flight or self.state == SwitchState.ROLLING_BACK

    @property
    def progress(self) -> Progress:
        return Progress(
            state=self.state,
            total=self.sessions_total,
            migrated=self.sessions_migrated,
            failed=self.sessions_failed,
            to_provider=self.to_provider,
            waiting_until=self.waiting_until,
        )


def message_view(progress: Progress | None) -> MessageView:
    message = switch_message(progress)
    return MessageView(kind=message.kind, lines=list(message.lines))


class SessionView(BaseModel):
    """An upcoming session with its current join link."""

    id: uuid.UUID
    booking_id: uuid.UUID
    tutor_id: uuid.UUID
    student_id: uuid.UUID
    tutor_name: str | None = None
    student_name: str | None = None
    topic: str | None = None
    status: str
    provider: str | None
    join_url: str | None
    scheduled_start_at: datetime
    duration_minutes: int


class DeletedMeetingView(BaseModel):
    """An upcoming session whose meeting was deleted at the provider (a dead link)."""

    id: int
    session_id: uuid.UUID
    provider: str
    meeting_external_id: str
    deleted_at: datetime
    scheduled_start_at: datetime
    topic: str | None = None
    student_name: str | None = None


def _printable(value: str, what: str) -> str:
    # PostgreSQL text cannot hold NUL, and control characters have no place in a
    # name or a meeting title: refused here, before any meeting is requested at the
    # provider (otherwise the meeting exists and the database step after it fails).
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise ValueError(f"the {what} must not contain control characters")
    if not value.strip():
        raise ValueError(f"the {what} must not be blank")
    return value


def _known_zone(value: str) -> str:
    # Zoom's `timezone` and Google's `timeZone` take IANA names only; refuse the
    # request here, with a 422 naming the field, rather than send a meeting
    # request the provider would refuse.
    if value not in _iana_zones():
        raise ValueError(f"unknown time zone {value!r}: use an IANA name like Europe/Paris")
    return value


Topic = Annotated[
    str, Field(min_length=1, max_length=200), AfterValidator(lambda v: _printable(v, "topic"))
]
PersonName = Annotated[
    str, Field(min_length=1, max_length=200), AfterValidator(lambda v: _printable(v, "name"))
]
TimeZone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_known_zone)]


class BookingRequest(BaseModel):
    """A booking the tutor accepts: the session to schedule."""

    student_id: uuid.UUID
    topic: Topic
    scheduled_start_at: datetime
    duration_minutes: int = Field(gt=0, le=600)
    timezone: TimeZone = "UTC"


class RetryAccepted(BaseModel):
    switch_id: uuid.UUID
    session_ids: list[uuid.UUID]
    event_id: uuid.UUID


class RollbackAccepted(BaseModel):
    switch_id: uuid.UUID
    to_provider: str
    generation: int
    event_id: uuid.UUID


# -- the service API (/platform/v1) -------------------------------------------

# The platform's own ids: what URLs and logs can carry without escaping.
EXTERNAL_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"
EMAIL = r"^[^@\s\x00-\x1f]{1,64}@[^@\s\x00-\x1f]{1,255}\.[^@\s\x00-\x1f]{1,63}$"


class PlatformUserIn(BaseModel):
    """A tutor or student as the platform knows them (`PUT /platform/v1/users/{id}`)."""

    role: Literal["tutor", "student"]
    name: PersonName
    email: str = Field(max_length=320, pattern=EMAIL)
    timezone: TimeZone = "UTC"


class PlatformUser(BaseModel):
    id: str = Field(description="the platform's id for the user")
    relink_id: uuid.UUID
    role: str
    name: str
    email: str
    timezone: str


class PlatformSessionIn(BaseModel):
    """A booked session (`POST /platform/v1/sessions`); gets a meeting at the tutor's provider."""

    id: str = Field(pattern=EXTERNAL_ID, description="the platform's id for the session")
    tutor: str = Field(pattern=EXTERNAL_ID, description="the tutor's platform id")
    student: str = Field(pattern=EXTERNAL_ID, description="the student's platform id")
    topic: Topic
    scheduled_start_at: datetime
    duration_minutes: int = Field(gt=0, le=600)
    timezone: TimeZone = "UTC"


class PlatformSession(BaseModel):
    id: str = Field(description="the platform's id for the session")
    relink_id: uuid.UUID
    tutor: str | None
    student: str | None
    status: str
    provider: str | None
    join_url: str | None
    scheduled_start_at: datetime
    duration_minutes: int


class StatusChange(BaseModel):
    """`PUT /platform/v1/sessions/{id}/status`: where the session is in its life.

    SCHEDULED → JOIN_OPEN → IN_PROGRESS → COMPLETED or NO_SHOW; CANCELLED from
    any state before those ends. CANCELLED emits `session.cancelled`: the
    migrator deletes the meeting at the provider (retried until it is gone) and
    the notifier emails the student a calendar cancellation.
    """

    status: Literal[
        SessionStatus.JOIN_OPEN,
        SessionStatus.IN_PROGRESS,
        SessionStatus.COMPLETED,
        SessionStatus.NO_SHOW,
        SessionStatus.CANCELLED,
    ]


@cache
def _iana_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def time_tag(moment: datetime | None) -> Markup:
    """A moment for the pages: the UTC instant in `<time datetime>`, shown as UTC (named)
    until `static/local_times.js` rewrites it in the viewer's own time zone, named too."""
    if moment is None:
        return Markup("")
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return Markup('<time class="local-time" datetime="{}">{}</time>').format(
        utc.strftime("%Y-%m-%dT%H:%M:%SZ"), utc.strftime("%Y-%m-%d %H:%M UTC")
    )
