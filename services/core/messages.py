"""One frozen dataclass per event type: what a producer builds and a consumer reads.

`events.py` is the envelope (CloudEvents attributes, schemas, Kafka form);
this module is the payload of each type as Python sees it, typed: ids are
strings, times are aware `datetime`s, counts are ints. `to_payload()` gives
the JSON the schema validates (times in RFC 3339 with a `Z`, absent optional
fields left out); `from_payload()` / `from_event()` check the payload against
its schema first, then build the dataclass, so nothing that arrives is used
before it is checked. `tests/unit/events/test_messages.py` binds each class
to its schema: the same fields, the same required ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from services.core import tracing
from services.core.events import (
    Event,
    EventType,
    Process,
    TopicNames,
    outbox_row,
    rfc3339,
    validate_payload,
)


@dataclass(frozen=True, slots=True)
class Message:
    """Common behaviour: the payload form, and reading one back."""

    TYPE: ClassVar[EventType]
    VERSION: ClassVar[int] = 1

    def to_payload(self) -> dict[str, Any]:
        """The payload, validated against this type's schema."""
        payload: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and _optional_absent(type(self), f.name):
                continue
            payload[f.name] = rfc3339(value) if isinstance(value, datetime) else value
        validate_payload(self.TYPE, payload, version=self.VERSION)
        return payload

    @classmethod
    def from_payload(cls, payload: typing.Mapping[str, Any]) -> Self:
        """Check `payload` against the schema, then read it (times become datetimes)."""
        validate_payload(cls.TYPE, payload, version=cls.VERSION)
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in payload:
                continue
            value = payload[f.name]
            if value is not None and _is_datetime(hints[f.name]):
                value = _parse_time(value)
            values[f.name] = value
        return cls(**values)

    @classmethod
    def from_event(cls, event: Event) -> Self:
        if event.type != cls.TYPE:
            raise ValueError(f"a {event.type} event is not a {cls.TYPE}")
        return cls.from_payload(event.data)


def message_row(
    message: Message,
    *,
    tutor_id: str,
    source: str | Process,
    topics: TopicNames,
    event_id: uuid.UUID | None = None,
    time: datetime | None = None,
) -> dict[str, Any]:
    """The outbox row carrying `message`: its payload checked against its schema, in its version.

    How every producer writes an event (`core.outbox.append` then adds the rows):
    the fields and their types are the dataclass's, never a hand-built dict.
    The row keeps the trace context of its switch (or the current one: `core.tracing`).
    """
    return outbox_row(
        message.TYPE,
        message.to_payload(),
        tutor_id=tutor_id,
        source=source,
        topics=topics,
        event_id=event_id,
        time=time,
        version=message.VERSION,
        trace=tracing.for_row(getattr(message, "switch_id", None)),
    )


# Fields whose schema allows null keep None in the payload; the rest are left out.
_NULLABLE: dict[type[Message], frozenset[str]] = {}


def _optional_absent(cls: type[Message], name: str) -> bool:
    return name not in _NULLABLE.get(cls, frozenset())


def _is_datetime(hint: Any) -> bool:
    if hint is datetime:
        return True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return datetime in typing.get_args(hint)
    return False


def _parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ProviderSwitched(Message):
    TYPE: ClassVar[EventType] = EventType.PROVIDER_SWITCHED
    switch_id: str
    tutor_id: str
    from_provider: str
    to_provider: str
    generation: int
    switched_at: datetime


@dataclass(frozen=True, slots=True)
class SwitchRollbackRequested(Message):
    TYPE: ClassVar[EventType] = EventType.SWITCH_ROLLBACK_REQUESTED
    switch_id: str
    tutor_id: str
    to_provider: str
    generation: int
    requested_at: datetime


@dataclass(frozen=True, slots=True)
class SwitchRolledBack(Message):
    TYPE: ClassVar[EventType] = EventType.SWITCH_ROLLED_BACK
    switch_id: str
    tutor_id: str
    restored_provider: str
    sessions_restored: int
    sessions_failed: int
    rolled_back_at: datetime


@dataclass(frozen=True, slots=True)
class SwitchDelayed(Message):
    TYPE: ClassVar[EventType] = EventType.SWITCH_DELAYED
    switch_id: str
    tutor_id: str
    provider: str
    reason: str
    sessions_total: int
    sessions_migrated: int
    sessions_failed: int
    sessions_waiting: int
    delayed_at: datetime
    resumes_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SwitchSettled(Message):
    """The migrator settled a switch (one of `switching.SETTLED`), with its counts then."""

    TYPE: ClassVar[EventType] = EventType.SWITCH_SETTLED
    switch_id: str
    tutor_id: str
    state: str
    from_provider: str
    to_provider: str
    sessions_total: int
    sessions_migrated: int
    sessions_failed: int
    sessions_skipped: int
    settled_at: datetime


@dataclass(frozen=True, slots=True)
class SessionRetryRequested(Message):
    TYPE: ClassVar[EventType] = EventType.SESSION_RETRY_REQUESTED
    switch_id: str
    tutor_id: str
    session_ids: list[str]
    requested_at: datetime


@dataclass(frozen=True, slots=True)
class SessionMigrated(Message):
    TYPE: ClassVar[EventType] = EventType.SESSION_MIGRATED
    switch_id: str
    tutor_id: str
    session_id: str
    student_id: str
    scheduled_start_at: datetime
    kind: str
    provider: str
    meeting_external_id: str
    join_url: str
    migrated_at: datetime
    booking_id: str | None = None
    previous_provider: str | None = None
    previous_meeting_external_id: str | None = None


@dataclass(frozen=True, slots=True)
class SessionFailed(Message):
    TYPE: ClassVar[EventType] = EventType.SESSION_FAILED
    switch_id: str
    tutor_id: str
    session_id: str
    student_id: str
    scheduled_start_at: datetime
    kind: str
    provider: str
    reason: str
    retryable: bool
    attempts: int
    failed_at: datetime
    booking_id: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderDisconnected(Message):
    TYPE: ClassVar[EventType] = EventType.PROVIDER_DISCONNECTED
    tutor_id: str
    provider: str
    reason: str
    upcoming_sessions: int
    disconnected_at: datetime


@dataclass(frozen=True, slots=True)
class SessionMeetingRecreated(Message):
    TYPE: ClassVar[EventType] = EventType.SESSION_MEETING_RECREATED
    tutor_id: str
    session_id: str
    student_id: str
    scheduled_start_at: datetime
    provider: str
    meeting_external_id: str
    join_url: str
    deleted_meeting_external_id: str
    recreated_at: datetime


@dataclass(frozen=True, slots=True)
class SessionCancelled(Message):
    TYPE: ClassVar[EventType] = EventType.SESSION_CANCELLED
    tutor_id: str
    session_id: str
    student_id: str
    scheduled_start_at: datetime
    previous_status: str
    provider: str | None
    meeting_external_id: str | None
    cancelled_at: datetime


_NULLABLE.update(
    {
        SessionCancelled: frozenset({"provider", "meeting_external_id"}),
        SessionMigrated: frozenset(
            {"booking_id", "previous_provider", "previous_meeting_external_id"}
        ),
        SessionFailed: frozenset({"booking_id"}),
    }
)

MESSAGES: dict[EventType, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        ProviderSwitched,
        SwitchRollbackRequested,
        SwitchRolledBack,
        SwitchDelayed,
        SwitchSettled,
        SessionRetryRequested,
        SessionMigrated,
        SessionFailed,
        ProviderDisconnected,
        SessionMeetingRecreated,
        SessionCancelled,
    )
}


def read(event: Event) -> Message:
    """The typed payload of an event of any known type (schema-checked first)."""
    try:
        cls = MESSAGES[EventType(event.type)]
    except (KeyError, ValueError):
        raise ValueError(f"no message class for {event.type!r}") from None
    return cls.from_event(event)
