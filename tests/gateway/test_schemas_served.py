"""The gateway serves the event contract read-only under /schemas/ (issue 20)."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from services.core import events
from tests.gateway.test_hardening import served

__all__ = ["served"]
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_the_packaged_schemas_and_asyncapi_are_served_byte_for_byte(served: str) -> None:
    for event_type in events.EventType:
        answer = httpx.get(f"{served}/schemas/{event_type}/v1.json")
        assert answer.status_code == 200, event_type
        assert answer.headers["content-type"] == "application/schema+json"
        assert answer.content == (SCHEMAS / str(event_type) / "v1.json").read_bytes()
    document = httpx.get(f"{served}/schemas/asyncapi.yaml")
    assert document.status_code == 200
    assert document.content == (SCHEMAS / "asyncapi.yaml").read_bytes()
    # the document's relative $refs resolve against the same path
    ref = yaml.safe_load(document.text)["components"]["messages"]["sessionMigrated"]["payload"]
    target = httpx.get(f"{served}/schemas/{ref['schema']['$ref']}")
    assert target.json()["$id"] == events.schema_uri("session.migrated")


def test_anything_else_under_schemas_is_not_found_and_nothing_can_be_written(
    served: str,
) -> None:
    for path in (
        "/schemas/session.migrated/v2.json",
        "/schemas/tutor.deleted/v1.json",
        "/schemas/session.migrated/README.md",
        "/schemas/session.migrated/v1.json.bak",
        "/schemas/..%2Fpyproject.toml/v1.json",
        "/schemas/README.md",
    ):
        answer = httpx.get(f"{served}{path}")
        assert answer.status_code == 404, path
        assert answer.json()["error"], path  # a JSON error, as documented
    assert httpx.put(f"{served}/schemas/session.migrated/v1.json", content=b"{}").status_code == 405
