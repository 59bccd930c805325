"""schemas/asyncapi.yaml through the official AsyncAPI parser (issue 20).

The parser (`@asyncapi/parser`, installed by `make asyncapi-parser`) validates
payload schemas only in a format it knows: with `draft-2020-12` it skipped
them and a broken `type` parsed clean; as `draft-07` (the subset of 2020-12 the
schemas use) it rejects one. Each message pins its `ce_type`, so the messages
sharing a topic can be told apart, and the dead-letter message describes what
relink's consumers really produce: the original headers plus `dlq_*`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from services.core import events

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
CHECK = ROOT / "devtools" / "asyncapi" / "check.mjs"


def parse(document: Path) -> dict[str, Any]:
    assert (CHECK.parent / "node_modules" / "@asyncapi" / "parser").is_dir(), (
        "run `make asyncapi-parser` (the official parser, from npm)"
    )
    node = shutil.which("node")
    assert node, "node is missing (make asyncapi-parser installs it)"
    done = subprocess.run(
        [node, str(CHECK), str(document)], capture_output=True, text=True, timeout=120
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_official_parser_accepts_the_document_and_reads_every_payload() -> None:
    result = parse(SCHEMAS / "asyncapi.yaml")
    assert result["ok"], result["errors"]
    formats = {m["schemaFormat"] for m in result["messages"] if m["name"] != "dead-letter"}
    assert formats == {"application/schema+json;version=draft-07"}
    payloads = {m["name"]: m["payloadType"] for m in result["messages"]}
    assert {name: payloads[name] for name in map(str, events.EventType)} == {
        str(t): "object" for t in events.EventType
    }


def test_a_broken_payload_schema_is_caught(tmp_path: Path) -> None:
    copied = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, copied)
    target = copied / "provider.switched" / "v1.json"
    schema = json.loads(target.read_text())
    schema["properties"]["generation"]["type"] = "integr"
    target.write_text(json.dumps(schema))
    result = parse(copied / "asyncapi.yaml")
    assert not result["ok"]
    assert any("integer" in e["message"] for e in result["errors"]), result["errors"]


def _document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text())
    return loaded


def _inline(node: Any, document: dict[str, Any]) -> Any:
    """The schema with its local `#/...` references replaced by what they point at."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = document
            for part in ref[2:].split("/"):
                target = target[part]
            return _inline(copy.deepcopy(target), document)
        return {k: _inline(v, document) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, document) for v in node]
    return node


def _header_schemas() -> dict[str, dict[str, Any]]:
    document = _document()
    return {
        message["name"]: _inline(message["headers"], document)
        for message in document["components"]["messages"].values()
    }


def _headers_of(message: Any) -> dict[str, str]:
    return {
        name: value.decode() if isinstance(value, bytes) else str(value)
        for name, value in dict(message.headers).items()
    }


@pytest.mark.parametrize("event_type", [str(t) for t in events.EventType])
def test_each_message_pins_its_ce_type(event_type: str) -> None:
    example = events.load_schema(event_type)["examples"][0]
    event = events.new_event(event_type, example, tutor_id="tutor-42", source="/relink/test")
    headers = _headers_of(events.to_message(event))
    matching = [
        name
        for name, schema in _header_schemas().items()
        if name != "dead-letter" and Draft7Validator(schema).is_valid(headers)
    ]
    assert matching == [event_type]  # a generator tells the messages on one topic apart


def test_the_dead_letter_message_is_the_original_headers_plus_dlq_ones() -> None:
    schema = _header_schemas()["dead-letter"]
    example = events.load_schema("session.migrated")["examples"][0]
    event = events.new_event("session.migrated", example, tutor_id="tutor-42", source="/x")
    message = events.to_message(event)
    for headers in (list(message.headers.items()), [("x", b"1")]):
        letter = events.dead_letter(
            topic="t",
            partition=0,
            offset=7,
            key=b"tutor-42",
            value=b"{",
            headers=[(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in headers],
            error=events.InvalidEvent("schema_violation", "why"),
            dead_letter_topic="relink.dead-letter",
        )
        got = {name: value.decode() for name, value in letter.headers}
        Draft7Validator(schema).validate(got)
    # what the document promises is what a relink event's dead letter keeps
    described = set(schema["allOf"][0]["properties"])
    assert set(_headers_of(message)) <= described
    assert {"dlq_reason", "dlq_detail", "dlq_original_topic"} <= set(
        schema["allOf"][1]["properties"]
    )


def test_the_trace_headers_are_described_as_optional() -> None:
    # The CloudEvents distributed-tracing extension: a traced event's headers
    # still match its message, and so does an untraced one (they are optional).
    document = _document()
    described = document["components"]["schemas"]["cloudEventHeaders"]
    assert {"ce_traceparent", "ce_tracestate"} <= set(described["properties"])
    assert not {"ce_traceparent", "ce_tracestate"} & set(described["required"])
    example = events.load_schema("session.migrated")["examples"][0]
    event = events.new_event("session.migrated", example, tutor_id="tutor-42", source="/x")
    traced = dataclasses.replace(
        event,
        trace={
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "relink=1",
        },
    )
    schema = _header_schemas()["session.migrated"]
    headers = _headers_of(events.to_message(traced))
    assert headers["ce_traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    Draft7Validator(schema).validate(headers)
    Draft7Validator(schema).validate(_headers_of(events.to_message(event)))
    broken = {**headers, "ce_traceparent": "not a traceparent"}
    assert not Draft7Validator(schema).is_valid(broken)
    # and the dead letter keeps them
    dead = set(_header_schemas()["dead-letter"]["allOf"][0]["properties"])
    assert {"ce_traceparent", "ce_tracestate"} <= dead
