"""What the notifier decides, with no I/O: which change an event is, who hears of it,
what the audit trail says, when to retry, how a time reads for the student.

Grouping: one student email per `session.migrated` (per session, not batched
per switch). A link that changed is news the student may need within the
hour — a switch with quota waits can take much longer to settle — and a
session is the unit the migrator reports, so "exactly once per change" maps
one-to-one onto one row in `notifications`, with nothing held back in memory
that a crash could lose.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.core import events, switching
from services.core.db.models import SessionStatus, SwitchState
from services.core.events import Event, EventType
from services.core.links import checked_join_url

# A fixed namespace: the change id of an email is a pure function of what changed.
CHANGE_NAMESPACE = uuid.UUID("5b7c1d2e-9f3a-4c6b-8e1d-2a4f6b8c0d1e")

PROVIDER_NAMES = {"zoom": "Zoom", "google_meet": "Google Meet"}


class NoticeKind:
    """The `notifications.kind` values."""

    SESSION_MOVED = "session_moved"
    SESSION_RESTORED = "session_restored"
    TUTOR_SUMMARY = "tutor_summary"
    TUTOR_ROLLBACK = "tutor_rollback"
    TUTOR_DELAYED = "tutor_delayed"
    TUTOR_DISCONNECTED = "tutor_disconnected"
    SESSION_RECREATED = "session_recreated"
    SESSION_CANCELLED = "session_cancelled"


def provider_name(provider: str | None) -> str:
    if provider is None:
        return "your previous provider"
    return PROVIDER_NAMES.get(provider, provider)


def change_id(*parts: str) -> uuid.UUID:
    """The id of a change, the same however many times (or under whatever event id) it arrives.

    The migrator emits one `session.migrated` per (switch, session, kind); keying
    the email on those three rather than on the event id also holds if it ever
    re-emitted the same change under a new id.
    """
    return uuid.uuid5(CHANGE_NAMESPACE, "\x1f".join(parts))


def message_id(change: uuid.UUID, recipient: str, *, domain: str) -> str:
    """A deterministic Message-ID: a resend after a crash carries the same one."""
    who = hashlib.sha256(recipient.lower().encode()).hexdigest()[:16]
    return f"<{change}.{who}@{domain}>"


def session_change(event: Event) -> uuid.UUID | None:
    """The change a session event reports to the student, or None if the student is not told.

    `session.failed` is not sent to students: their session keeps the link it
    had, and the tutor hears of it in the summary.
    """
    if event.type != EventType.SESSION_MIGRATED:
        return None
    data = event.data
    return change_id("session", data["switch_id"], data["session_id"], data["kind"])


def session_notice_kind(event: Event) -> str:
    return (
        NoticeKind.SESSION_RESTORED
        if event.data.get("kind") == "rollback"
        else NoticeKind.SESSION_MOVED
    )


def summary_change(switch_id: str) -> uuid.UUID:
    return change_id("summary", switch_id)


def rollback_change(switch_id: str) -> uuid.UUID:
    return change_id("rolled_back", switch_id)


def delayed_change(switch_id: str, resumes_at: str) -> uuid.UUID:
    """One email per announced wait: a later day's wait is a new change."""
    return change_id("delayed", switch_id, resumes_at)


def disconnected_change(tutor_id: str, provider: str, disconnected_at: str) -> uuid.UUID:
    """One email per removal of the app: a later removal (after reconnecting) is a new change."""
    return change_id("disconnected", tutor_id, provider, disconnected_at)


def recreated_change(session_id: str, meeting_external_id: str) -> uuid.UUID:
    """One email per re-created meeting of a session."""
    return change_id("recreated", session_id, meeting_external_id)


def cancelled_change(session_id: str) -> uuid.UUID:
    """A session is cancelled once: one email per session, whatever re-emits it."""
    return change_id("cancelled", session_id)


def zone(name: str | None) -> ZoneInfo:
    """The student's time zone; UTC when unknown or unset."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_time(moment: datetime, tz_name: str | None) -> str:
    """E.g. 'Thursday 10 January 2030, 16:00 CET (Europe/Berlin)'."""
    tz = zone(tz_name)
    local = moment.astimezone(tz)
    return f"{local:%A} {local.day} {local:%B %Y, %H:%M} {local.tzname()} ({tz.key})"


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def as_uuid(value: Any) -> uuid.UUID | None:
    """A UUID column's value from an event field; None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class AuditFacts:
    """The readable columns of one audit row: who, what, which session, from/to, outcome."""

    from_provider: str | None
    to_provider: str | None
    outcome: str


def audit_facts(event_type: str, data: dict[str, Any]) -> AuditFacts:
    """What an event means for the audit trail."""
    if event_type == EventType.PROVIDER_SWITCHED:
        return AuditFacts(data.get("from_provider"), data.get("to_provider"), "switched")
    if event_type == EventType.SESSION_MIGRATED:
        outcome = {"switch": "migrated", "retry": "migrated_on_retry", "rollback": "restored"}
        return AuditFacts(
            data.get("previous_provider"),
            data.get("provider"),
            outcome.get(str(data.get("kind")), "migrated"),
        )
    if event_type == EventType.SESSION_FAILED:
        return AuditFacts(None, data.get("provider"), f"failed: {data.get('reason', 'unknown')}")
    if event_type == EventType.SWITCH_ROLLED_BACK:
        return AuditFacts(
            None,
            data.get("restored_provider"),
            f"rolled_back: {data.get('sessions_restored', 0)} restored, "
            f"{data.get('sessions_failed', 0)} failed",
        )
    if event_type == EventType.SWITCH_SETTLED:
        return AuditFacts(
            data.get("from_provider"),
            data.get("to_provider"),
            f"settled: {str(data.get('state', '')).lower()}, "
            f"{data.get('sessions_migrated', 0)} of {data.get('sessions_total', 0)} moved, "
            f"{data.get('sessions_failed', 0)} failed, {data.get('sessions_skipped', 0)} skipped",
        )
    if event_type == EventType.SWITCH_ROLLBACK_REQUESTED:
        return AuditFacts(None, data.get("to_provider"), "rollback_requested")
    if event_type == EventType.SWITCH_DELAYED:
        return AuditFacts(
            None,
            data.get("provider"),
            f"delayed: {data.get('sessions_waiting', 0)} waiting "
            + (
                f"until {data['resumes_at']}"
                if data.get("resumes_at")
                else f"({data.get('reason')}, no time given)"
            ),
        )
    if event_type == EventType.SESSION_RETRY_REQUESTED:
        return AuditFacts(None, None, f"retry_requested: {len(data.get('session_ids', []))}")
    if event_type == EventType.SESSION_MEETING_RECREATED:
        return AuditFacts(data.get("provider"), data.get("provider"), "meeting_recreated")
    if event_type == EventType.PROVIDER_DISCONNECTED:
        return AuditFacts(data.get("provider"), None, f"disconnected: {data.get('reason')}")
    if event_type == EventType.SESSION_CANCELLED:
        return AuditFacts(data.get("provider"), None, "cancelled")
    return AuditFacts(None, None, event_type)


def audit_row(
    *,
    event_id: str,
    source: str,
    event_type: str,
    time: datetime,
    subject: str,
    data: dict[str, Any],
    topic: str | None,
    partition: int | None,
    offset: int | None,
) -> dict[str, Any]:
    """The `audit_log` row of one event."""
    facts = audit_facts(event_type, data)
    return {
        "event_id": uuid.UUID(event_id),
        "event_source": source,
        "event_type": event_type,
        "event_time": time,
        "tutor_id": as_uuid(data.get("tutor_id", subject)),
        "switch_id": as_uuid(data.get("switch_id")),
        "session_id": as_uuid(data.get("session_id")),
        "from_provider": facts.from_provider,
        "to_provider": facts.to_provider,
        "outcome": facts.outcome,
        "payload": data,
        "kafka_topic": topic,
        "kafka_partition": partition,
        "kafka_offset": offset,
    }


# The audit columns that come from the event itself; a replayed row must agree on these.
COMPARED_COLUMNS = (
    "event_source",
    "event_type",
    "event_time",
    "tutor_id",
    "switch_id",
    "session_id",
    "from_provider",
    "to_provider",
    "outcome",
    "payload",
)


def audit_differences(
    expected: dict[str, Any], actual: dict[str, Any]
) -> list[tuple[str, Any, Any]]:
    """(column, on the topics, in the table) for each compared column that differs."""
    found = []
    for column in COMPARED_COLUMNS:
        want, have = expected.get(column), actual.get(column)
        if want != have:
            found.append((column, want, have))
    return found


# -- the audit trail's replay and verification (pure: parsing and planning) -------------


@dataclass(frozen=True, slots=True)
class Consumed:
    """A parsed event and where on the topics it was read."""

    event: Event
    topic: str
    partition: int
    offset: int


def consumed_audit_row(consumed: Consumed) -> dict[str, Any]:
    """The `audit_log` row of an event the live loop consumed (with its Kafka coordinates)."""
    event = consumed.event
    return audit_row(
        event_id=event.id,
        source=event.source,
        event_type=event.type,
        time=event.time.astimezone(UTC) if isinstance(event.time, datetime) else event.time,
        subject=event.subject,
        data=event.data,
        topic=consumed.topic,
        partition=consumed.partition,
        offset=consumed.offset,
    )


def expected_audit_row(event: Event) -> dict[str, Any]:
    """The row `--verify` expects for an event read from the topics (no Kafka coordinates)."""
    return audit_row(
        event_id=event.id,
        source=event.source,
        event_type=event.type,
        time=event.time,
        subject=event.subject,
        data=event.data,
        topic=None,
        partition=None,
        offset=None,
    )


AUDIT_COLUMNS = (
    "event_id",
    "event_source",
    "event_type",
    "event_time",
    "tutor_id",
    "switch_id",
    "session_id",
    "from_provider",
    "to_provider",
    "outcome",
    "payload",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class PartitionRange:
    topic: str
    partition: int
    start: int
    end: int  # exclusive: the high watermark when the replay began


def partition_range(
    topic: str, partition: int, *, low: int, high: int, found: int | None
) -> PartitionRange:
    """A partition's range to read: from `low` (or the offset found for `since`) to `high`.

    `found` is None without `since`; negative when no message is that recent."""
    start = low
    if found is not None:
        start = high if found < 0 else max(low, found)
    return PartitionRange(topic, partition, start, high)


@dataclass
class ReplayReport:
    read: int = 0
    inserted: int = 0
    skipped_invalid: int = 0


@dataclass
class VerifyReport:
    events_on_topics: int = 0  # messages, repeats included
    distinct_events: int = 0
    rows_in_table: int = 0
    missing: list[str] = field(default_factory=list)  # on the topics, not in the table
    extra: list[str] = field(default_factory=list)  # in the table, not on the topics
    different: list[tuple[str, str, Any, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different)


RawMessage = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], str, int, int]


def rows_of(chunk: list[RawMessage]) -> tuple[list[tuple[Any, ...]], int]:
    """COPY-ready audit rows of raw messages, and how many could not be parsed.

    Values are text (COPY's own format) so no UUID or datetime objects are built
    only to be turned back into strings.
    """
    rows: list[tuple[Any, ...]] = []
    invalid = 0
    for key, value, headers, topic, partition, offset in chunk:
        try:
            event = events.parse_message(key=key, value=value, headers=headers)
            if _uuid_text(event.id) is None:
                raise events.InvalidEvent("bad_event_id", "ce_id is not a UUID")
        except (events.InvalidEvent, events.SkippedEvent):
            # unreadable, or a type/version the notifier does not read: not audited
            invalid += 1
            continue
        data = event.data
        facts = audit_facts(event.type, data)
        rows.append(
            (
                event.id,
                event.source,
                event.type,
                event.time.isoformat(),
                _uuid_text(data.get("tutor_id", event.subject)),
                _uuid_text(data.get("switch_id")),
                _uuid_text(data.get("session_id")),
                facts.from_provider,
                facts.to_provider,
                facts.outcome,
                # the message's own JSON goes into the jsonb column as it is
                value.decode() if value is not None else json.dumps(data),
                topic,
                partition,
                offset,
            )
        )
    return rows, invalid


def _uuid_text(value: Any) -> str | None:
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value  # already what str(UUID(value)) gives; parsing it costs ~1 µs
    parsed = as_uuid(value)
    return None if parsed is None else str(parsed)


# -- trusting an event: only once the database agrees with it -----------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a consumed event may be used for, once checked against the database.

    `refused` says why it cannot be trusted (it is then dead-lettered, not
    audited, and nobody is emailed); `join_url` is the link to send, read from
    the database, never from the event.
    """

    refused: str | None = None
    join_url: str | None = None


TRUSTED = Verdict()


def _same(a: object, b: object) -> bool:
    return a is not None and b is not None and str(a) == str(b)


def verify_migrated(
    data: dict[str, Any], *, tutor_id: str, rows: list[dict[str, Any]], allow_http: bool
) -> Verdict:
    """A `session.migrated` is true when its switch's migration row of that session,
    of that tutor and student, holds the meeting it names; the link is the row's."""
    if not rows:
        return Verdict("no migration of this session in this switch")
    back = data.get("kind") == "rollback"
    for row in rows:
        owners = (row["tutor_id"], row["session_tutor_id"], row["switch_tutor_id"])
        if not all(_same(o, tutor_id) for o in owners):
            return Verdict("session, switch and tutor do not belong together")
        if not _same(row["student_id"], data.get("student_id")):
            return Verdict("the session is not this student's")
        meeting = row["previous_meeting_external_id" if back else "new_meeting_external_id"]
        link = row["previous_join_url" if back else "new_join_url"]
        if _same(meeting, data.get("meeting_external_id")):
            checked = checked_join_url(link, allow_http=allow_http)
            if checked is None:
                return Verdict("the recorded join link is not a web link")
            return Verdict(join_url=checked)
    return Verdict("the migration did not make the meeting this event names")


def verify_recreated(
    data: dict[str, Any], *, tutor_id: str, current: dict[str, Any] | None, allow_http: bool
) -> Verdict:
    """A `session.meeting_recreated` is true when the session has that meeting now."""
    if current is None:
        return Verdict("no such session")
    if not _same(current["session_tutor_id"], tutor_id):
        return Verdict("the session is not this tutor's")
    if not _same(current["student_id"], data.get("student_id")):
        return Verdict("the session is not this student's")
    if not _same(current["meeting_external_id"], data.get("meeting_external_id")):
        return Verdict("the session does not have the meeting this event names")
    checked = checked_join_url(current["join_url"], allow_http=allow_http)
    if checked is None:
        return Verdict("the recorded join link is not a web link")
    return Verdict(join_url=checked)


def verify_cancelled(
    data: dict[str, Any], *, tutor_id: str, current: dict[str, Any] | None
) -> Verdict:
    """A `session.cancelled` is true when the session is this tutor's and student's, and
    cancelled now (a cancellation is final)."""
    if current is None:
        return Verdict("no such session")
    if not _same(current["session_tutor_id"], tutor_id):
        return Verdict("the session is not this tutor's")
    if not _same(current["student_id"], data.get("student_id")):
        return Verdict("the session is not this student's")
    if current["status"] != SessionStatus.CANCELLED:
        return Verdict("the session is not cancelled")
    return TRUSTED


def verify_owner(owner: object, *, tutor_id: str, what: str) -> Verdict:
    """An event about a switch (or a failed row) is true when that exists and is this tutor's."""
    if owner is None:
        return Verdict(f"no such {what}")
    if not _same(owner, tutor_id):
        return Verdict(f"the {what} is not this tutor's")
    return TRUSTED


# The settled states whose tutor gets the switch summary. A superseded switch
# gets none (the newer switch's summary tells what happened; a summary of the
# superseded one would claim moves it never finished), and a rolled-back one
# gets the rollback summary of `switch.rolled_back` instead.
SUMMARISED = frozenset({SwitchState.COMPLETED.value, SwitchState.COMPLETED_WITH_FAILURES.value})
SETTLED_COUNTS = ("sessions_total", "sessions_migrated", "sessions_failed")


def verify_settled(
    data: dict[str, Any], *, tutor_id: str, switch: dict[str, Any] | None
) -> Verdict:
    """A `switch.settled` is true when its switch is this tutor's, between the providers it
    names, and in the state it claims or one the switch can have reached from it since
    (a completed switch reopens for a retry, or is rolled back)."""
    owner = verify_owner(switch["tutor_id"] if switch else None, tutor_id=tutor_id, what="switch")
    if owner.refused is not None or switch is None:
        return owner
    if (switch["from_provider"], switch["to_provider"]) != (
        data.get("from_provider"),
        data.get("to_provider"),
    ):
        return Verdict("the switch is not between the providers this event names")
    claimed = SwitchState(data["state"])
    if claimed not in switching.SETTLED:
        return Verdict(f"{claimed} is not a settled state")
    if SwitchState(switch["state"]) not in switching.reachable_from(claimed):
        return Verdict(f"the switch is {switch['state']}, which cannot follow {claimed}")
    return TRUSTED


def summary_is_due(data: dict[str, Any], *, switch: dict[str, Any]) -> bool:
    """Whether a (verified) `switch.settled` owes the tutor the switch summary now.

    Only for a completed switch whose row still says what the event says: the
    summary's counts are then the database's. If the switch has moved on (a
    retry reopened it, a rollback started), this settlement is history: the
    next `switch.settled`, or the rollback's summary, tells the tutor instead.
    """
    if data["state"] not in SUMMARISED or switch["state"] != data["state"]:
        return False
    return all(int(switch[name]) == int(data[name]) for name in SETTLED_COUNTS)
