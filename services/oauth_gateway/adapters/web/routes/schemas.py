"""The event contract, served read-only: `/schemas/<type>/v<n>.json` and `/schemas/asyncapi.yaml`.

The files are the packaged ones (`services.core.events.SCHEMAS_DIR`, the
repository's `schemas/`), so a consumer can fetch the JSON Schema a
`ce_dataschema` names, and the AsyncAPI document's relative `$ref`s resolve
against the same path. Under the default RELINK_EVENTS_SCHEMA_BASE they are
served byte for byte; a deployment that sets its own base gets the schemas'
`$id` and the document's `ce_dataschema` constants under it, the URLs its
producers write. Only known event types and versions on disk are served; any
other path is a 404.
"""

from __future__ import annotations

import json
import re

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.core import events
from services.oauth_gateway.adapters.web.openapi import answers
from services.oauth_gateway.errors import NotFound

router = APIRouter(tags=["contract"])
_VERSION_FILE = re.compile(r"v([1-9][0-9]{0,3})\.json")
# The files change only with a release of relink; an hour of caching is safe.
_CACHE = {"Cache-Control": "public, max-age=3600"}


@router.get(
    "/schemas/asyncapi.yaml",
    response_class=Response,
    responses={**answers(413, 414), 200: {"content": {"application/yaml": {}}}},
)
async def asyncapi_document(request: Request) -> Response:
    """The AsyncAPI document of relink's topics."""
    body = (events.SCHEMAS_DIR / "asyncapi.yaml").read_bytes()
    base = _schema_base(request)
    if base != events.SCHEMA_BASE_URI:
        body = body.replace(f"{events.SCHEMA_BASE_URI}/".encode(), f"{base}/".encode())
    return Response(body, media_type="application/yaml", headers=_CACHE)


@router.get(
    "/schemas/{event_type}/{file_name}",
    response_class=Response,
    responses={**answers(404, 413, 414), 200: {"content": {"application/schema+json": {}}}},
)
async def event_schema(request: Request, event_type: str, file_name: str) -> Response:
    """The JSON Schema of one event type and version, e.g. `/schemas/session.migrated/v1.json`."""
    match = _VERSION_FILE.fullmatch(file_name)
    if event_type not in {str(t) for t in events.EventType} or match is None:
        raise NotFound(f"no schema {event_type}/{file_name}")
    version = int(match.group(1))
    path = events.schema_path(event_type, version=version)
    if not path.is_file():
        raise NotFound(f"no schema {event_type}/{file_name}")
    body = path.read_bytes()
    base = _schema_base(request)
    if base != events.SCHEMA_BASE_URI:
        schema = json.loads(body)
        schema["$id"] = events.schema_uri(event_type, version=version, base=base)
        body = (json.dumps(schema, indent=2, ensure_ascii=False) + "\n").encode()
    return Response(body, media_type="application/schema+json", headers=_CACHE)


def _schema_base(request: Request) -> str:
    """The deployment's RELINK_EVENTS_SCHEMA_BASE."""
    base: str = request.app.state.gateway.settings.events_schema_base
    return base
