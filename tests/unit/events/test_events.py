"""The pure event module: envelope, validation, Kafka binary mode, dead letters."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.core import events
from services.core.events import EventType, InvalidEvent
from services.core.settings import CommonSettings

SOURCE = "/relink/test"
TOPICS = CommonSettings(RELINK_TOPIC_PREFIX="unit.")


def example(event_type: str) -> dict[str, Any]:
    return copy.deepcopy(events.load_schema(event_type)["examples"][0])


def message_of(row: dict[str, Any]) -> Any:
    return events.outbox_message(
        event_id=row["event_id"],
        event_type=row["event_type"],
        aggregate_id=row["aggregate_id"],
        payload=json.dumps(row["payload"]).encode(),
        headers=row["headers"],
    )


@pytest.mark.parametrize("event_type", list(EventType))
def test_outbox_row_round_trips_through_kafka_binary_mode(event_type: str) -> None:
    payload = example(event_type)
    event_id = uuid.uuid4()
    row = events.outbox_row(
        event_type, payload, tutor_id="tutor-42", source=SOURCE, topics=TOPICS, event_id=event_id
    )
    assert row["event_id"] == event_id
    assert row["aggregate_type"] == "tutor"
    assert row["aggregate_id"] == "tutor-42"
    assert row["topic"].startswith("unit.")

    message = message_of(row)
    assert message.key == b"tutor-42"
    assert message.headers["ce_id"] == str(event_id).encode()
    assert message.headers["ce_type"] == event_type.encode()
    assert message.headers["ce_source"] == SOURCE.encode()
    assert message.headers["ce_specversion"] == b"1.0"
    assert message.headers["ce_subject"] == b"tutor-42"
    assert message.headers["content-type"] == b"application/json"
    assert b"ce_time" in {k.encode() for k in message.headers}
    assert json.loads(message.value) == payload

    parsed = events.parse_message(
        key=message.key, value=message.value, headers=list(message.headers.items())
    )
    assert parsed.id == str(event_id)
    assert parsed.data == payload
    assert parsed.dedup_key == (SOURCE, str(event_id))
    assert parsed.version == 1


def test_topics_follow_event_types() -> None:
    assert events.topic_for("provider.switched", TOPICS) == "unit.provider.switched"
    assert events.topic_for("switch.rollback_requested", TOPICS) == "unit.provider.switched"
    assert events.topic_for("session.migrated", TOPICS) == "unit.session.migrated"
    assert events.topic_for("session.failed", TOPICS) == "unit.session.failed"


def test_event_time_is_kept_in_utc() -> None:
    moment = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    row = events.outbox_row(
        "provider.switched",
        example("provider.switched"),
        tutor_id="tutor-42",
        source=SOURCE,
        topics=TOPICS,
        time=moment,
    )
    assert row["headers"]["time"] == "2030-01-01T12:00:00Z"
    parsed = events.parse_message(**_parts(message_of(row)))
    assert parsed.time == moment


def _parts(message: Any) -> dict[str, Any]:
    return {"key": message.key, "value": message.value, "headers": list(message.headers.items())}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda p: p.pop("to_provider"), "schema_violation"),
        (lambda p: p.update(to_provider="teams"), "schema_violation"),
        (lambda p: p.update(switch_id="not-a-uuid"), "schema_violation"),
        (lambda p: p.update(switched_at="yesterday"), "schema_violation"),
        (lambda p: p.update(access_token="ya29.secret"), "schema_violation"),
        (lambda p: p.update(tutor_id="someone-else"), "subject_mismatch"),
    ],
)
def test_building_an_invalid_event_raises_with_a_reason(change: Any, reason: str) -> None:
    payload = example("provider.switched")
    change(payload)
    with pytest.raises(InvalidEvent) as caught:
        events.outbox_row(
            "provider.switched", payload, tutor_id="tutor-42", source=SOURCE, topics=TOPICS
        )
    assert caught.value.reason == reason


def test_unknown_type_is_invalid() -> None:
    with pytest.raises(InvalidEvent) as caught:
        events.new_event("tutor.deleted", {}, tutor_id="t", source=SOURCE)
    assert caught.value.reason == "unknown_type"


def _valid_parts() -> dict[str, Any]:
    row = events.outbox_row(
        "session.migrated",
        example("session.migrated"),
        tutor_id="tutor-42",
        source=SOURCE,
        topics=TOPICS,
    )
    return _parts(message_of(row))


def _drop_header(parts: dict[str, Any], name: str) -> dict[str, Any]:
    parts["headers"] = [(k, v) for k, v in parts["headers"] if k != name]
    return parts


def _set_header(parts: dict[str, Any], name: str, value: bytes) -> dict[str, Any]:
    parts["headers"] = [(k, v) for k, v in parts["headers"] if k != name] + [(name, value)]
    return parts


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda m: m.update(value=b"{not json"), "bad_payload"),
        (lambda m: m.update(value=b"[1, 2]"), "bad_payload"),
        (lambda m: m.update(value=None), "empty_value"),
        (lambda m: m.update(headers=[]), "not_cloudevent"),
        (lambda m: _drop_header(m, "ce_id"), "bad_envelope"),
        (lambda m: _drop_header(m, "ce_source"), "bad_envelope"),
        (lambda m: _set_header(m, "ce_time", b"soon"), "bad_envelope"),
        (lambda m: _set_header(m, "ce_specversion", b"0.1"), "bad_envelope"),
        (lambda m: _set_header(m, "ce_dataschema", b"https://x/y.json"), "unknown_dataschema"),
        (lambda m: _drop_header(m, "ce_subject"), "missing_subject"),
        (lambda m: m.update(key=b"tutor-other"), "key_mismatch"),
        (lambda m: m.update(value=b'{"tutor_id": "tutor-42"}'), "schema_violation"),
    ],
)
def test_parsing_a_bad_message_raises_with_a_reason(spoil: Any, reason: str) -> None:
    parts = _valid_parts()
    spoil(parts)
    with pytest.raises(InvalidEvent) as caught:
        events.parse_message(**parts)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("change", "reason", "version"),
    [
        (lambda m: _set_header(m, "ce_type", b"tutor.deleted"), "unknown_type", None),
        (
            lambda m: _set_header(
                m, "ce_dataschema", b"https://relink.example/schemas/session.migrated/v2.json"
            ),
            "newer_version",
            2,
        ),
    ],
)
def test_a_type_or_version_not_read_is_skipped_not_invalid(
    change: Any, reason: str, version: int | None
) -> None:
    # issue 20: these used to raise InvalidEvent (dead-lettered); a tolerant reader skips them
    parts = _valid_parts()
    change(parts)
    with pytest.raises(events.SkippedEvent) as caught:
        events.parse_message(**parts)
    assert (caught.value.reason, caught.value.version) == (reason, version)


def test_an_added_optional_field_is_read_and_dropped() -> None:
    parts = _valid_parts()
    payload = {**json.loads(parts["value"]), "added_later": {"any": "shape"}}
    parts["value"] = json.dumps(payload).encode()
    parsed = events.parse_message(**parts)
    assert "added_later" not in parsed.data
    assert parsed.data == {k: v for k, v in payload.items() if k != "added_later"}
    # producers stay strict
    with pytest.raises(InvalidEvent) as caught:
        events.new_event("session.migrated", payload, tutor_id="tutor-42", source=SOURCE)
    assert caught.value.reason == "schema_violation"


def test_a_dataschema_under_another_base_is_read() -> None:
    parts = _valid_parts()
    _set_header(parts, "ce_dataschema", b"https://events.school.test/s/session.migrated/v1.json")
    assert events.parse_message(**parts).version == 1
    # and the event keeps the URL it came with (a consumer passing it on names it)
    assert (
        events.parse_message(**parts).dataschema
        == "https://events.school.test/s/session.migrated/v1.json"
    )


def test_a_process_source_is_resolved_against_the_deployments_base() -> None:
    topics = TOPICS.model_copy(
        update={
            "events_source_base": "https://relink.school.test",
            "events_schema_base": "https://relink.school.test/schemas",
        }
    )
    example = events.load_schema("switch.settled")["examples"][0]
    row = events.outbox_row(
        "switch.settled",
        example,
        tutor_id=example["tutor_id"],
        source=events.Process("migrator"),
        topics=topics,
    )
    assert row["headers"]["source"] == "https://relink.school.test/migrator"
    assert row["headers"]["dataschema"] == (
        "https://relink.school.test/schemas/switch.settled/v1.json"
    )
    # a plain string is taken as it is
    kept = events.outbox_row(
        "switch.settled", example, tutor_id=example["tutor_id"], source=SOURCE, topics=topics
    )
    assert kept["headers"]["source"] == SOURCE


def test_dead_letter_keeps_the_original_and_says_why() -> None:
    original_headers = [("ce_id", b"1"), ("x-trace", None)]
    letter = events.dead_letter(
        topic="unit.session.migrated",
        partition=3,
        offset=41,
        key=b"tutor-42",
        value=b"{not json",
        headers=original_headers,
        error=InvalidEvent("bad_payload", "value is not a JSON object"),
        dead_letter_topic=TOPICS.topic_dead_letter,
    )
    assert letter.topic == "unit.relink.dead-letter"
    assert letter.key == b"tutor-42"
    assert letter.value == b"{not json"
    headers = dict(letter.headers)
    assert headers["ce_id"] == b"1"
    assert headers["dlq_reason"] == b"bad_payload"
    assert headers["dlq_original_topic"] == b"unit.session.migrated"
    assert headers["dlq_original_partition"] == b"3"
    assert headers["dlq_original_offset"] == b"41"
