"""The public contract in `schemas/`: well-formed, documented, complete, secret-free."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator

from services.core import events
from services.core.events import EventType

# The one source of the contract: the top-level `schemas/` of the checkout.
SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
SCHEMA_FILES = sorted(SCHEMAS.glob("*/v*.json"))


def test_the_package_sees_exactly_the_checkouts_schemas() -> None:
    # events.py reads them through importlib.resources; the package's view must
    # be the top-level folder's files, byte for byte (a new schema is picked up).
    packaged = events.SCHEMAS_DIR
    for path in [*SCHEMA_FILES, SCHEMAS / "asyncapi.yaml"]:
        relative = path.relative_to(SCHEMAS).parts
        assert packaged.joinpath(*relative).read_bytes() == path.read_bytes()
    seen = {entry.name for entry in packaged.iterdir() if entry.is_dir()}
    assert seen == {path.parent.name for path in SCHEMA_FILES}


def test_every_event_type_has_a_v1_schema_and_no_orphans() -> None:
    on_disk = {path.parent.name for path in SCHEMA_FILES}
    assert on_disk == {str(t) for t in EventType}


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_schema_is_draft_2020_12_and_documents_every_property(path: Path) -> None:
    schema = json.loads(path.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    # the AsyncAPI document declares the payloads draft-07 (what its parser
    # validates): only keywords that mean the same in draft-07 and 2020-12
    Draft7Validator.check_schema(schema)
    assert not _keywords(schema) & DRAFT_2019_PLUS, _keywords(schema) & DRAFT_2019_PLUS
    assert schema["$id"] == events.schema_uri(path.parent.name, version=int(path.stem[1:]))
    assert schema["additionalProperties"] is False
    assert schema.get("description")
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{name} has no description"
    for sample in schema["examples"]:
        events.validate_payload(path.parent.name, sample)


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_schema_names_a_secret(path: Path) -> None:
    assert events.secret_like_names(json.loads(path.read_text())) == []


def test_secret_scan_finds_nested_names() -> None:
    assert events.secret_like_names(
        {"properties": {"meeting": {"properties": {"host_access_token": {}}}}}
    ) == ["host_access_token"]


DRAFT_2019_PLUS = frozenset(
    {
        "$defs",
        "$anchor",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "prefixItems",
        "unevaluatedItems",
        "unevaluatedProperties",
        "dependentRequired",
        "dependentSchemas",
        "minContains",
        "maxContains",
        "contentSchema",
    }
)


def _keywords(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            found.add(key)
            if key != "properties":
                found |= _keywords(value)
            else:
                for child in value.values():
                    found |= _keywords(child)
    elif isinstance(node, list):
        for value in node:
            found |= _keywords(value)
    return found


def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text())
    return document


def test_asyncapi_parses_and_every_message_has_a_schema() -> None:
    document = asyncapi()
    assert document["asyncapi"].startswith("3.0")
    messages = document["components"]["messages"]
    named = set()
    for message in messages.values():
        if message["name"] == "dead-letter":
            continue
        ref = message["payload"]["schema"]["$ref"]
        target = SCHEMAS / ref
        assert target.is_file(), ref
        assert json.loads(target.read_text())["$id"].endswith(ref)
        named.add(message["name"])
    assert named == {str(t) for t in EventType}


def test_asyncapi_references_resolve_and_channels_match_topics() -> None:
    document = asyncapi()
    for channel in document["channels"].values():
        for ref in channel["messages"].values():
            assert _resolve(document, ref["$ref"]) is not None
    for operation in document["operations"].values():
        assert _resolve(document, operation["channel"]["$ref"]) is not None
    addresses = {channel["address"] for channel in document["channels"].values()}
    from services.core.settings import CommonSettings

    assert addresses == set(CommonSettings().topics)
    # each event type is listed on the channel its topic_for() names
    for channel in document["channels"].values():
        for ref in channel["messages"].values():
            name = _resolve(document, ref["$ref"])["name"]
            if name != "dead-letter":
                assert events.topic_for(name, CommonSettings()) == channel["address"]


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node
