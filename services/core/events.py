"""relink's event contract in code: build, validate and parse events.

Every producer and consumer goes through this module, so the envelope and
the payload schemas (`schemas/<type>/v1.json`) are applied in one place.

* Producers never write to Kafka: they call `outbox_row(...)` and append the
  values with `services.core.outbox.append(...)` (which takes the tutor's
  outbox lock) in the same transaction as their change; the
  relay turns each row into a Kafka message with `outbox_message(...)`.
* Consumers call `parse_message(...)`; on `InvalidEvent` they send the
  original message to the dead-letter topic with `dead_letter(...)` and move on.
  On `SkippedEvent` (a well-formed event of a type, or a version, this reader
  was not built for) they count it, log it and move on: it is not broken, it
  is not theirs (schemas/README.md, "Producers strict, readers tolerant").

Producers are strict, readers tolerant: `new_event`/`outbox_row` validate the
whole payload against its schema (`additionalProperties: false`), while
`parse_message` validates only the properties its schema knows and drops the
others, so an optional field added within a version reaches old readers as the
event they know.

Wire format: CloudEvents 1.0 in Kafka *binary* mode (the SDK's binding does the
headers): `ce_id`, `ce_source`, `ce_type`, `ce_specversion`, `ce_time`,
`ce_subject`, `ce_dataschema` (names the schema and its version),
`content-type: application/json`; the value is the JSON payload; the key is
the tutor id. `(ce_source, ce_id)` is the dedup key of every consumer.

This module is pure: no I/O besides reading the schema files once.

Errors:

    RelinkError
    └── EventError              something is wrong with an event
        ├── UnknownEventType    a type (or version) we have no schema for
        ├── SkippedEvent        well-formed, but of a type or version this reader
        │                       does not read; `.reason` is `unknown_type`,
        │                       `newer_version` or `older_version`
        └── InvalidEvent        cannot be parsed or does not match its schema;
                                `.reason` is a short code for `dlq_reason`
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Protocol
from urllib.parse import urlsplit

import fastjsonschema
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, to_binary
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from services.core.errors import RelinkError

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
AGGREGATE_TYPE = "tutor"
# The schemas ship inside the package (`services/core/schemas` links to the
# top-level `schemas/` in the checkout and the wheel build copies the files in),
# so they are found the same way from a wheel install and an editable one.
SCHEMAS_DIR = resources.files("services.core") / "schemas"
# The defaults of RELINK_EVENTS_SCHEMA_BASE and RELINK_EVENTS_SOURCE_BASE: the
# `$id` base of the schema files in `schemas/` (a deployment's gateway serves
# them under its own base), and the base of every producer's `ce_source`, an
# absolute URI as CloudEvents recommends. `.example` is reserved (RFC 2606).
SCHEMA_BASE_URI = "https://relink.example/schemas"
SOURCE_BASE_URI = "https://relink.example"

# Headers the dead-letter topic adds to the original message's own headers.
DLQ_REASON = "dlq_reason"
DLQ_DETAIL = "dlq_detail"
DLQ_ORIGINAL_TOPIC = "dlq_original_topic"
DLQ_ORIGINAL_PARTITION = "dlq_original_partition"
DLQ_ORIGINAL_OFFSET = "dlq_original_offset"

# Property names that must never appear in a schema or an event: the
# contract forbids carrying credentials on a topic.
SECRET_NAME = re.compile(
    r"token|secret|password|passwd|authorization|credential|api_?key|private_?key|cookie",
    re.IGNORECASE,
)


class EventError(RelinkError):
    """Base of the event module's errors."""


class UnknownEventType(EventError):
    """No schema exists for this event type and version."""


class SkippedEvent(EventError):
    """A readable event this reader does not read: count it, log it, commit past it."""

    def __init__(self, reason: str, event_type: str, version: int | None, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.event_type = event_type
        self.version = version
        self.detail = detail


class SkipCounts:
    """How many events a reader skipped, by (reason, type, version): for its log lines."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int | None], int] = {}

    def add(self, skipped: SkippedEvent) -> int:
        """Count one skipped event; returns how many of its kind so far."""
        kind = (skipped.reason, skipped.event_type, skipped.version)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return self.counts[kind]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class InvalidEvent(EventError):
    """An event that cannot be parsed or does not validate; `reason` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class EventType(StrEnum):
    """Every event type relink produces (the `ce_type` header)."""

    PROVIDER_SWITCHED = "provider.switched"
    SWITCH_ROLLBACK_REQUESTED = "switch.rollback_requested"
    SWITCH_ROLLED_BACK = "switch.rolled_back"
    SWITCH_DELAYED = "switch.delayed"
    SWITCH_SETTLED = "switch.settled"
    SESSION_RETRY_REQUESTED = "session.retry_requested"
    SESSION_MIGRATED = "session.migrated"
    SESSION_FAILED = "session.failed"
    PROVIDER_DISCONNECTED = "provider.disconnected"
    SESSION_MEETING_RECREATED = "session.meeting_recreated"
    SESSION_CANCELLED = "session.cancelled"


_KNOWN_TYPES = frozenset(str(t) for t in EventType)
# The schema version of each type relink's own consumers are built on. An
# event of another version of a known type is skipped (counted and logged),
# not dead-lettered: during a dual-publish window the version a reader knows
# arrives beside the other one.
READ_VERSIONS: Mapping[str, int] = {str(t): 1 for t in EventType}
REQUIRED_HEADERS = ("ce_id", "ce_source", "ce_type", "ce_time")
# The CloudEvents distributed-tracing extension's attributes (W3C Trace Context):
# optional; stored in the outbox row's `headers`, sent as `ce_traceparent` / `ce_tracestate`.
TRACE_ATTRIBUTES = ("traceparent", "tracestate")


class TopicNames(Protocol):
    """The part of `CommonSettings` that names topics."""

    @property
    def topic_provider_switched(self) -> str: ...
    @property
    def topic_session_migrated(self) -> str: ...
    @property
    def topic_session_failed(self) -> str: ...
    @property
    def topic_dead_letter(self) -> str: ...
    # and the deployment's bases of `ce_source` and `ce_dataschema`
    @property
    def events_source_base(self) -> str: ...
    @property
    def events_schema_base(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Process:
    """A relink process as a producer: its `ce_source` is `<RELINK_EVENTS_SOURCE_BASE>/<name>`.

    `outbox_row` resolves it against the deployment's base when the event is
    built; the source is then stored in the outbox row's headers, so a row
    published (or a record redelivered) after the base changed keeps the source
    it was built with, and consumers' `(source, id)` dedup keys stay stable.
    """

    name: str

    def uri(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.name}"


def topic_for(event_type: str, topics: TopicNames) -> str:
    """The topic an event type is published to.

    The switch's lifecycle (switched, rollback/retry requested, rolled back)
    shares the `provider.switched` topic: same key, same partition, so the
    migrator sees a rollback or a retry after the switch it refers to.
    """
    kind = EventType(event_type)
    if kind is EventType.SESSION_MIGRATED:
        return topics.topic_session_migrated
    if kind is EventType.SESSION_FAILED:
        return topics.topic_session_failed
    return topics.topic_provider_switched


@dataclass(frozen=True, slots=True)
class Event:
    """One relink event: CloudEvents attributes plus a validated payload."""

    id: str
    type: str
    source: str
    subject: str
    time: datetime
    data: dict[str, Any]
    version: int = 1
    specversion: str = SPECVERSION
    # The CloudEvents distributed-tracing extension (`ce_traceparent`, `ce_tracestate`):
    # the W3C trace context the event was created in; {} when it carries none.
    trace: dict[str, str] = field(default_factory=dict)
    schema_base: str = SCHEMA_BASE_URI

    @property
    def tutor_id(self) -> str:
        """The aggregate the event belongs to; the Kafka key."""
        return self.subject

    @property
    def dataschema(self) -> str:
        return schema_uri(self.type, version=self.version, base=self.schema_base)

    @property
    def dedup_key(self) -> tuple[str, str]:
        """`(source, id)`: what a consumer records to ignore redeliveries."""
        return (self.source, self.id)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message to produce to the dead-letter topic."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def schema_uri(event_type: str, *, version: int = 1, base: str = SCHEMA_BASE_URI) -> str:
    """The `$id` of an event type's schema under `base`; sent as `ce_dataschema`."""
    return f"{base.rstrip('/')}/{event_type}/v{version}.json"


def schema_path(event_type: str, *, version: int = 1) -> Traversable:
    return SCHEMAS_DIR / event_type / f"v{version}.json"


@cache
def load_schema(event_type: str, *, version: int = 1) -> dict[str, Any]:
    """The JSON Schema of one event type and version."""
    path = schema_path(event_type, version=version)
    if event_type not in _KNOWN_TYPES or not path.is_file():
        raise UnknownEventType(f"no schema for {event_type!r} v{version}")
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if "T" not in value.upper():
        return False
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return parsed.tzinfo is not None


def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme) and bool(parts.netloc or parts.path)


def _format_checker() -> FormatChecker:
    # jsonschema checks date-time and uri only with optional extras installed;
    # these two are the formats our payloads rely on.
    checker = FormatChecker()
    checker.checks("date-time", raises=ValueError)(_is_date_time)
    checker.checks("uri")(_is_uri)
    return checker


@cache
def _validator(event_type: str, version: int) -> Draft202012Validator:
    return Draft202012Validator(
        load_schema(event_type, version=version), format_checker=_format_checker()
    )


FastCheck = Callable[[Any], Any]


@cache
def _fast_check(event_type: str, version: int) -> FastCheck:
    """The schema compiled to Python code by fastjsonschema: ~10x faster than jsonschema.

    It is only a pre-check: a payload it rejects goes through jsonschema, which
    alone decides (and words the reason), so a stricter reading of some
    keyword by fastjsonschema (e.g. `pattern`'s `$`) can never reject a valid
    event. Every `format` it meets is checked by jsonschema's own checker, so
    the two agree on date-time, uri and uuid.
    """
    schema = load_schema(event_type, version=version)
    checker = _validator(event_type, version).format_checker
    assert checker is not None
    formats = {name: _format_function(checker, name) for name in _formats_in(schema)}
    return fastjsonschema.compile(schema, formats=formats, use_default=False)


def _format_function(checker: FormatChecker, name: str) -> Callable[[Any], bool]:
    return lambda value: checker.conforms(value, name)


def _formats_in(schema: Any) -> set[str]:
    found: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            if isinstance(node.get("format"), str):
                found.add(node["format"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def known_part(event_type: str, payload: Mapping[str, Any], *, version: int = 1) -> dict[str, Any]:
    """The payload without the properties its schema does not name (a tolerant reader's view).

    A property added within a version is optional (schemas/README.md), so a
    reader built on the older schema drops it and reads the event it knows.
    """
    known = load_schema(event_type, version=version).get("properties", {})
    return {name: value for name, value in payload.items() if name in known}


def validate_payload(event_type: str, payload: Mapping[str, Any], *, version: int = 1) -> None:
    """Raise `InvalidEvent` unless the payload matches its schema (strictly: producers)."""
    try:
        fast_check = _fast_check(event_type, version)
    except UnknownEventType as exc:
        raise InvalidEvent("unknown_type", str(exc)) from exc
    try:
        fast_check(payload)
    except fastjsonschema.JsonSchemaValueException:
        pass  # jsonschema decides below, and says why
    else:
        return
    error = _first_error(_validator(event_type, version).iter_errors(payload))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InvalidEvent(
            "schema_violation", f"{event_type} v{version} at {where}: {error.message}"
        )


def _first_error(errors: Iterable[ValidationError]) -> ValidationError | None:
    return next(iter(sorted(errors, key=lambda e: list(map(str, e.absolute_path)))), None)


def new_event(
    event_type: str,
    payload: Mapping[str, Any],
    *,
    tutor_id: str,
    source: str,
    event_id: uuid.UUID | str | None = None,
    time: datetime | None = None,
    version: int = 1,
    schema_base: str = SCHEMA_BASE_URI,
) -> Event:
    """Build and validate an event (strictly); ids and times default to fresh ones."""
    if not tutor_id:
        raise InvalidEvent("missing_subject", "tutor_id must not be empty")
    if not source:
        raise InvalidEvent("missing_source", "source must not be empty")
    data = dict(payload)
    validate_payload(event_type, data, version=version)
    if data.get("tutor_id", tutor_id) != tutor_id:
        raise InvalidEvent("subject_mismatch", "payload tutor_id differs from the event's tutor")
    return Event(
        id=str(event_id or uuid.uuid4()),
        type=event_type,
        source=source,
        subject=tutor_id,
        time=(time or datetime.now(UTC)).astimezone(UTC),
        data=data,
        version=version,
        schema_base=schema_base,
    )


def outbox_row(
    event_type: str,
    payload: Mapping[str, Any],
    *,
    tutor_id: str,
    source: str | Process,
    topics: TopicNames,
    event_id: uuid.UUID | None = None,
    time: datetime | None = None,
    version: int = 1,
    trace: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The column values of the `outbox` row that will carry this event (schema `version`).

    Append them with `services.core.outbox.append(conn, tutor_id, [values])`
    in the transaction that makes the change the event reports; the relay
    publishes the row later. `trace`: the W3C trace context (`traceparent`,
    `tracestate`) the row keeps in its headers for the relay to send. A
    `Process` source becomes `<topics.events_source_base>/<name>`;
    `ce_dataschema` is under `topics.events_schema_base`.
    """
    event = new_event(
        event_type,
        payload,
        tutor_id=tutor_id,
        source=source.uri(topics.events_source_base) if isinstance(source, Process) else source,
        event_id=event_id,
        time=time,
        version=version,
        schema_base=topics.events_schema_base,
    )
    return {
        "event_id": uuid.UUID(event.id),
        "aggregate_type": AGGREGATE_TYPE,
        "aggregate_id": event.tutor_id,
        "event_type": event.type,
        "topic": topic_for(event.type, topics),
        "payload": event.data,
        "headers": {**envelope_headers(event), **_trace_part(trace)},
    }


def outbox_rows(
    event_type: str,
    payloads: Mapping[int, Mapping[str, Any]],
    *,
    tutor_id: str,
    source: str | Process,
    topics: TopicNames,
    dual_publish: Collection[str] = (),
    time: datetime | None = None,
) -> list[dict[str, Any]]:
    """The outbox rows of one event given in one or more schema versions.

    `payloads` maps a version to its payload. Outside a deprecation window the
    event goes out once, in the oldest version given (what every reader knows);
    when `event_type` is in `dual_publish` (the setting
    RELINK_EVENTS_DUAL_PUBLISH) it goes out in every version given, oldest
    first, each its own event id, so readers of either version get it once
    (a reader skips the versions it does not read). Each row is validated
    strictly against its version's schema.
    """
    if not payloads:
        raise ValueError(f"no payload given for {event_type}")
    versions = sorted(payloads) if event_type in dual_publish else [min(payloads)]
    moment = time or datetime.now(UTC)
    return [
        outbox_row(
            event_type,
            payloads[version],
            tutor_id=tutor_id,
            source=source,
            topics=topics,
            time=moment,
            version=version,
        )
        for version in versions
    ]


def envelope_headers(event: Event) -> dict[str, str]:
    """The CloudEvents attributes an outbox row stores besides id and type."""
    return {
        "source": event.source,
        "subject": event.subject,
        "time": rfc3339(event.time),
        "specversion": event.specversion,
        "dataschema": event.dataschema,
    }


def _trace_part(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The distributed-tracing attributes among `headers` (a row's, a context's)."""
    if not headers:
        return {}
    return {name: str(headers[name]) for name in TRACE_ATTRIBUTES if headers.get(name)}


def rfc3339(moment: datetime) -> str:
    """The one UTC timestamp form relink writes: RFC 3339 with a `Z`."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_message(event: Event) -> KafkaMessage:
    """The event as a Kafka message in CloudEvents binary mode (key = tutor id)."""
    headers = {**envelope_headers(event), **_trace_part(event.trace)}
    return _binary(event.id, event.type, event.subject, event.data, headers)


def outbox_message(
    *,
    event_id: uuid.UUID | str,
    event_type: str,
    aggregate_id: str,
    payload: Mapping[str, Any] | bytes | str,
    headers: Mapping[str, Any],
) -> KafkaMessage:
    """The Kafka message for an outbox row, as the relay publishes it.

    `payload` may be the row's JSON text (the relay selects `payload::text`
    to skip a parse and re-serialise per row); it was validated when the row
    was built, so it is not validated again here.
    """
    return _binary(str(event_id), event_type, aggregate_id, payload, headers)


def _binary(
    event_id: str,
    event_type: str,
    subject: str,
    data: Mapping[str, Any] | bytes | str,
    headers: Mapping[str, Any],
) -> KafkaMessage:
    attributes: dict[str, Any] = {
        "id": event_id,
        "type": event_type,
        "source": headers["source"],
        "specversion": headers.get("specversion", SPECVERSION),
        "subject": headers.get("subject", subject),
        "time": _parse_time(headers["time"]),
        "datacontenttype": CONTENT_TYPE,
    }
    if headers.get("dataschema"):
        attributes["dataschema"] = headers["dataschema"]
    attributes.update(_trace_part(headers))
    body: dict[str, Any] | bytes | str = dict(data) if isinstance(data, Mapping) else data
    cloud_event = CloudEvent(attributes, body)
    return to_binary(cloud_event, JSONFormat(), key_mapper=lambda _e: subject.encode())


def _parse_time(value: datetime | str) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def parse_message(
    *,
    key: bytes | str | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None,
    read_versions: Mapping[str, int] = READ_VERSIONS,
) -> Event:
    """Parse and validate a Kafka message, as a tolerant reader.

    Raises `InvalidEvent` (with a reason code; dead-letter it) for what cannot
    be read at all, and `SkippedEvent` for a well-formed event whose type is
    not in `read_versions` or whose `ce_dataschema` names another version than
    the one read (count it, log it, move on). Properties the schema does not
    name are dropped before validation (see `known_part`).
    """
    header_map = _header_dict(headers)
    if value is None:
        raise InvalidEvent("empty_value", "message has no value")
    if "ce_specversion" not in header_map:
        raise InvalidEvent("not_cloudevent", "no ce_specversion header (binary mode expected)")
    # The SDK fills a missing id or time with fresh ones, which would defeat
    # deduplication; an event without them is malformed.
    missing = [name for name in REQUIRED_HEADERS if not header_map.get(name)]
    if missing:
        raise InvalidEvent("bad_envelope", f"missing header(s) {', '.join(missing)}")
    try:
        cloud_event = from_binary(
            KafkaMessage(headers=header_map, key=key, value=value), JSONFormat(), CloudEvent
        )
    except (BaseCloudEventException, ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent("bad_envelope", str(exc)) from exc
    data = cloud_event.get_data()
    if not isinstance(data, dict):
        raise InvalidEvent("bad_payload", "value is not a JSON object")
    event_type = cloud_event.get_type()
    if event_type not in _KNOWN_TYPES or event_type not in read_versions:
        raise SkippedEvent(
            "unknown_type",
            event_type,
            None,
            f"{event_type!r} is not an event type this reader reads",
        )
    subject = cloud_event.get_subject()
    if not subject:
        raise InvalidEvent("missing_subject", "no ce_subject header")
    key_text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    if key_text is not None and key_text != subject:
        raise InvalidEvent("key_mismatch", "message key differs from ce_subject")
    version = _version_of(cloud_event.get_dataschema(), event_type)
    wanted = read_versions[event_type]
    if version != wanted:
        raise SkippedEvent(
            "newer_version" if version > wanted else "older_version",
            event_type,
            version,
            f"{event_type} v{version}; this reader reads v{wanted}",
        )
    data = known_part(event_type, data, version=version)
    validate_payload(event_type, data, version=version)
    if data.get("tutor_id", subject) != subject:
        raise InvalidEvent("subject_mismatch", "payload tutor_id differs from ce_subject")
    time = cloud_event.get_time()
    if time is None:
        raise InvalidEvent("missing_time", "no ce_time header")
    return Event(
        id=cloud_event.get_id(),
        type=event_type,
        source=cloud_event.get_source(),
        subject=subject,
        time=time,
        data=data,
        version=version,
        trace={
            name: str(value)
            for name in TRACE_ATTRIBUTES
            if (value := cloud_event.get_extension(name))
        },
        schema_base=_schema_base_of(cloud_event.get_dataschema(), event_type),
    )


def _header_dict(
    headers: Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None,
) -> dict[str, bytes]:
    items = headers.items() if isinstance(headers, Mapping) else (headers or [])
    return {name: value for name, value in items if value is not None}


def _version_of(dataschema: str | None, event_type: str) -> int:
    """The schema version a `ce_dataschema` names; v1 when absent.

    Any base URL is accepted (a deployment serves the schemas under its own,
    RELINK_EVENTS_SCHEMA_BASE): a reader resolves the schema by type and
    version, never by the URL's host; the path must end in `<type>/v<n>.json`.
    """
    if not dataschema:
        return 1
    match = _dataschema_pattern(event_type).fullmatch(dataschema)
    if match is None:
        raise InvalidEvent(
            "unknown_dataschema", f"{dataschema!r} is not a schema of {event_type!r}"
        )
    return int(match.group("version"))


def _schema_base_of(dataschema: str | None, event_type: str) -> str:
    """The base a received `ce_dataschema` is under (the default when absent or bare)."""
    match = _dataschema_pattern(event_type).fullmatch(dataschema or "")
    return match.group("base") if match and match.group("base") else SCHEMA_BASE_URI


@cache
def _dataschema_pattern(event_type: str) -> re.Pattern[str]:
    return re.compile(
        rf"(?:(?P<base>.*)/)?{re.escape(event_type)}/v(?P<version>[1-9]\d{{0,3}})\.json"
    )


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    error: InvalidEvent | str,
    dead_letter_topic: str,
) -> DeadLetter:
    """The dead-letter copy of a message: original key, value and headers plus why and where."""
    reason, detail = (
        (error.reason, error.detail) if isinstance(error, InvalidEvent) else (error, "")
    )
    kept = [(name, value or b"") for name, value in (headers or [])]
    return DeadLetter(
        topic=dead_letter_topic,
        key=key,
        value=value,
        headers=[
            *kept,
            (DLQ_REASON, reason.encode()),
            (DLQ_DETAIL, detail[:1000].encode()),
            (DLQ_ORIGINAL_TOPIC, topic.encode()),
            (DLQ_ORIGINAL_PARTITION, str(partition).encode()),
            (DLQ_ORIGINAL_OFFSET, str(offset).encode()),
        ],
    )


def secret_like_names(schema: Mapping[str, Any]) -> list[str]:
    """Property names anywhere in a schema (or payload) that look like credentials."""
    found: list[str] = []
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            for name, child in node.items():
                if name in ("properties", "patternProperties") and isinstance(child, Mapping):
                    found.extend(n for n in child if SECRET_NAME.search(n))
                elif isinstance(name, str) and SECRET_NAME.search(name) and name != "$schema":
                    found.append(name)
                stack.append(child)
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(set(found))
