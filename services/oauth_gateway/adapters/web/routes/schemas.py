"""The event contract, served read-only: `/schemas/<type>/v<n>.json` and `/schemas/asyncapi.yaml`.

The files are the packaged ones (`services.core.events.SCHEMAS_DIR`, the
repository's `schemas/`), byte for byte, so a consumer can fetch the JSON
Schema a `ce_dataschema` names, and the AsyncAPI document's relative `$ref`s
resolve against the same path. Only known event types and versions on disk
are served; any other path is a 404.
"""

from __future__ import annotations

import re

from fastapi import APIRouter
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
async def asyncapi_document() -> Response:
    """The AsyncAPI document of relink's topics."""
    body = (events.SCHEMAS_DIR / "asyncapi.yaml").read_bytes()
    return Response(body, media_type="application/yaml", headers=_CACHE)


@router.get(
    "/schemas/{event_type}/{file_name}",
    response_class=Response,
    responses={**answers(404, 413, 414), 200: {"content": {"application/schema+json": {}}}},
)
async def event_schema(event_type: str, file_name: str) -> Response:
    """The JSON Schema of one event type and version, e.g. `/schemas/session.migrated/v1.json`."""
    match = _VERSION_FILE.fullmatch(file_name)
    if event_type not in {str(t) for t in events.EventType} or match is None:
        raise NotFound(f"no schema {event_type}/{file_name}")
    path = events.schema_path(event_type, version=int(match.group(1)))
    if not path.is_file():
        raise NotFound(f"no schema {event_type}/{file_name}")
    return Response(path.read_bytes(), media_type="application/schema+json", headers=_CACHE)
