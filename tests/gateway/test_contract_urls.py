"""A deployment names its own URLs in the event contract (issue 20).

RELINK_EVENTS_SOURCE_BASE makes the gateway's `ce_source` the absolute
`<base>/oauth-gateway`; RELINK_EVENTS_SCHEMA_BASE puts `ce_dataschema` under
the deployment's base, and the served `relink gateway` answers `/schemas/…`
with each schema's `$id` (and the AsyncAPI document's constants) under it.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import Engine, text

from services.core import events
from services.oauth_gateway.settings import GatewaySettings
from tests.gateway.conftest import People, connect, switch_id_of
from tests.gateway.test_hardening import served

__all__ = ["served"]
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
SOURCE_BASE = "https://relink.school.test"
SCHEMA_BASE = "https://relink.school.test/contract/schemas"


@pytest.fixture
def relink_env(relink_env: dict[str, str]) -> dict[str, str]:
    return {
        **relink_env,
        "RELINK_EVENTS_SOURCE_BASE": SOURCE_BASE,
        "RELINK_EVENTS_SCHEMA_BASE": SCHEMA_BASE + "/",
    }


@pytest.fixture
def gateway_settings(gateway_settings: GatewaySettings) -> GatewaySettings:
    return gateway_settings.model_copy(
        update={"events_source_base": SOURCE_BASE, "events_schema_base": SCHEMA_BASE}
    )


async def test_the_switch_event_names_the_deployments_source_and_schema(
    http: httpx.AsyncClient, people: People, engine: Engine
) -> None:
    tutor = people("tutor")
    await connect(http, tutor, "zoom")
    switch_id = switch_id_of(await connect(http, tutor, "google_meet"))
    with engine.connect() as conn:
        headers = conn.execute(
            text(
                "SELECT headers FROM outbox WHERE event_type = 'provider.switched' "
                "AND payload->>'switch_id' = :id"
            ),
            {"id": str(switch_id)},
        ).scalar_one()
    assert headers["source"] == f"{SOURCE_BASE}/oauth-gateway"
    assert headers["dataschema"] == f"{SCHEMA_BASE}/provider.switched/v1.json"


def test_the_served_schemas_carry_the_deployments_base(served: str) -> None:
    for event_type in events.EventType:
        answer = httpx.get(f"{served}/schemas/{event_type}/v1.json")
        assert answer.status_code == 200, event_type
        served_schema = answer.json()
        assert served_schema["$id"] == f"{SCHEMA_BASE}/{event_type}/v1.json"
        packaged = json.loads((SCHEMAS / str(event_type) / "v1.json").read_text())
        assert {**served_schema, "$id": packaged["$id"]} == packaged  # nothing else changed
    document = yaml.safe_load(httpx.get(f"{served}/schemas/asyncapi.yaml").text)
    message = document["components"]["messages"]["sessionMigrated"]
    pinned = message["headers"]["allOf"][1]["properties"]["ce_dataschema"]["const"]
    assert pinned == f"{SCHEMA_BASE}/session.migrated/v1.json"
    # the URL an event names is the document the gateway serves
    target = httpx.get(f"{served}/schemas/{message['payload']['schema']['$ref']}")
    assert target.json()["$id"] == pinned
