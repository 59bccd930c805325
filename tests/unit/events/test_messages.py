"""Each event type's dataclass is bound to its JSON Schema: same fields, same rules."""

from __future__ import annotations

import dataclasses
import typing
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.core import messages
from services.core.events import EventType, InvalidEvent, load_schema, new_event

JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "boolean": bool, "array": list}


def _schema_types(prop: dict[str, Any]) -> tuple[set[Any], bool]:
    kinds = prop["type"]
    names: list[str] = kinds if isinstance(kinds, list) else [kinds]
    nullable = "null" in names
    py = {JSON_TYPES[n] for n in names if n != "null"}
    if prop.get("format") == "date-time":
        py = {datetime}
    return py, nullable


def _hint_types(hint: Any) -> tuple[set[Any], bool]:
    if isinstance(hint, type) or typing.get_origin(hint) is list:
        return {typing.get_origin(hint) or hint}, False
    args = typing.get_args(hint)
    return {a for a in args if a is not type(None)}, type(None) in args


def test_every_event_type_has_its_dataclass() -> None:
    assert set(messages.MESSAGES) == set(EventType)


@pytest.mark.parametrize("event_type", sorted(EventType), ids=str)
def test_fields_match_the_schema(event_type: EventType) -> None:
    cls = messages.MESSAGES[event_type]
    schema = load_schema(event_type, version=cls.VERSION)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(fields) == set(schema["properties"])
    required = {n for n, f in fields.items() if f.default is dataclasses.MISSING}
    assert required == set(schema["required"])
    hints = typing.get_type_hints(cls)
    for name, prop in schema["properties"].items():
        want, nullable = _schema_types(prop)
        got, optional = _hint_types(hints[name])
        assert got == want, f"{event_type}.{name}: {got} vs schema {want}"
        if nullable:
            assert name in messages._NULLABLE.get(cls, frozenset()), name
        if name not in schema["required"]:
            assert optional, f"{event_type}.{name} is optional in the schema"


def _sample(event_type: EventType) -> dict[str, Any]:
    schema = load_schema(event_type)
    values: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        if name not in schema["required"]:
            continue
        kinds, _ = _schema_types(prop)
        if name == "reason" and event_type == EventType.SWITCH_DELAYED:
            values[name] = "usage_limits"  # daily_quota requires resumes_at
        elif "enum" in prop:
            values[name] = prop["enum"][0]
        elif datetime in kinds:
            values[name] = "2031-01-10T15:00:00Z"
        elif prop.get("format") == "uuid":
            values[name] = str(uuid.uuid4())
        elif prop.get("format") == "uri":
            values[name] = "https://example.test/j/1"
        elif int in kinds:
            values[name] = 1
        elif bool in kinds:
            values[name] = True
        elif list in kinds:
            values[name] = [str(uuid.uuid4())]
        else:
            values[name] = "x"
    return values


@pytest.mark.parametrize("event_type", sorted(EventType), ids=str)
def test_the_schemas_examples_round_trip(event_type: EventType) -> None:
    cls = messages.MESSAGES[event_type]
    examples = load_schema(event_type)["examples"]
    assert examples
    for example in examples:
        assert cls.from_payload(example).to_payload() == example


@pytest.mark.parametrize("event_type", sorted(EventType), ids=str)
def test_a_minimal_payload_round_trips(event_type: EventType) -> None:
    payload = _sample(event_type)
    cls = messages.MESSAGES[event_type]
    message = cls.from_payload(payload)
    assert cls.from_payload(message.to_payload()) == message
    # what the producer sends is what was given, plus the nullable fields as null
    assert {k: v for k, v in message.to_payload().items() if v is not None} == payload
    event = new_event(event_type, payload, tutor_id=str(payload.get("tutor_id", "x")), source="t")
    assert messages.read(event) == message
    for name, value in payload.items():
        if isinstance(value, str) and value.endswith("Z"):
            assert getattr(message, name) == datetime(2031, 1, 10, 15, tzinfo=UTC)


def test_what_breaks_the_schema_is_refused_both_ways() -> None:
    payload = _sample(EventType.PROVIDER_SWITCHED)
    with pytest.raises(InvalidEvent):
        messages.ProviderSwitched.from_payload({**payload, "generation": "two"})
    good = messages.ProviderSwitched.from_payload(payload)
    with pytest.raises(InvalidEvent):
        dataclasses.replace(good, to_provider="skype").to_payload()
    with pytest.raises(ValueError, match="is not a"):
        messages.SessionMigrated.from_event(
            new_event(EventType.PROVIDER_SWITCHED, payload, tutor_id="x", source="t")
        )
