"""The compiled (fastjsonschema) pre-check never accepts what jsonschema rejects.

`validate_payload` trusts the compiled check when it passes and asks
jsonschema otherwise, so the one thing that could weaken validation is the
compiled check passing a payload jsonschema refuses. These cases mutate every
schema's example field by field and compare the two.
"""

from __future__ import annotations

import copy
from typing import Any

import fastjsonschema
import pytest

from services.core import events
from services.core.events import EventType, InvalidEvent

# Values that break some keyword or format of our schemas: wrong types,
# empties, out-of-enum, and the format edge cases each checker must agree on.
SPOILERS: list[Any] = [
    None,
    "",
    "x",
    0,
    -1,
    1.5,
    True,
    [],
    {},
    ["a", "a"],
    "not-a-date",
    "2030-01-10",  # a date, not a date-time
    "2030-01-10T15:00:00",  # no offset
    "2030-01-10 15:00:00Z",  # no T
    "2030-01-10T25:00:00Z",
    "2030-01-10T15:00:00Z",
    "2030-01-10t15:00:00z",
    "meet.google.com/abc",  # no scheme
    "https://",
    "https://meet.google.com/abc-defg-hij",
    "mailto:someone@example.test",
    "7d0f1f5e4a4e4c3e9a550c1d2e3f4a5b",  # a UUID without hyphens
    "{7d0f1f5e-4a4e-4c3e-9a55-0c1d2e3f4a5b}",
    "urn:uuid:7d0f1f5e-4a4e-4c3e-9a55-0c1d2e3f4a5b",
    "7D0F1F5E-4A4E-4C3E-9A55-0C1D2E3F4A5B",
    "7d0f1f5e-4a4e-4c3e-9a55-0c1d2e3f4a5",
    "7d0f1f5e-4a4e-4c3e-9a55-0c1d2e3f4a5b",
    "x" * 5000,
]


def jsonschema_accepts(event_type: str, payload: Any) -> bool:
    return not list(events._validator(event_type, 1).iter_errors(payload))


def fast_accepts(event_type: str, payload: Any) -> bool:
    try:
        events._fast_check(event_type, 1)(payload)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def variants(event_type: str) -> list[Any]:
    example: dict[str, Any] = events.load_schema(event_type)["examples"][0]
    schema_fields = list(events.load_schema(event_type)["properties"])
    out: list[Any] = [copy.deepcopy(example), [], "payload", None]
    for name in schema_fields:
        without = copy.deepcopy(example)
        without.pop(name, None)
        out.append(without)
        for spoiler in SPOILERS:
            changed = copy.deepcopy(example)
            changed[name] = copy.deepcopy(spoiler)
            out.append(changed)
    out.append({**copy.deepcopy(example), "access_token": "x"})
    return out


@pytest.mark.parametrize("event_type", list(EventType))
def test_compiled_check_accepts_only_what_jsonschema_accepts(event_type: str) -> None:
    disagreements = [
        payload
        for payload in variants(event_type)
        if fast_accepts(event_type, payload) and not jsonschema_accepts(event_type, payload)
    ]
    assert disagreements == []


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_variant_gets_jsonschemas_verdict(event_type: str) -> None:
    for payload in variants(event_type):
        if not isinstance(payload, dict):
            continue
        try:
            events.validate_payload(event_type, payload)
            accepted = True
        except InvalidEvent as exc:
            assert exc.reason == "schema_violation"
            accepted = False
        assert accepted == jsonschema_accepts(event_type, payload), payload


def test_a_violation_still_reads_as_jsonschema_words_it() -> None:
    payload = copy.deepcopy(events.load_schema("session.migrated")["examples"][0])
    payload["switch_id"] = "7d0f1f5e4a4e4c3e9a550c1d2e3f4a5b"
    with pytest.raises(InvalidEvent) as caught:
        events.validate_payload("session.migrated", payload)
    assert caught.value.detail == (
        "session.migrated v1 at switch_id: '7d0f1f5e4a4e4c3e9a550c1d2e3f4a5b' is not a 'uuid'"
    )
