"""What `/openapi.json` promises: the error shape, every status each operation answers, security.

Each route declares its answers with `answers(...)`, so the document lists every
status the code can send (schemathesis checks it: `tests/gateway/test_openapi_fuzz.py`).
Every error, from the use cases, the request guard (413/414), request validation
(422) or a database outage (503), has one JSON shape, `ErrorBody`; the browser
routes (OAuth start and callback) answer errors with an HTML page instead.

Who is calling is proved one of two ways, both declared as security schemes:
the platform-signed sign-in token as `Authorization: Bearer …` (servers,
scripts), or the same token in the session cookie (the browser; then changes
also carry the CSRF token in `X-CSRF-Token` or the form).
"""

from __future__ import annotations

from typing import Any

from fastapi.security import APIKeyCookie, HTTPBearer
from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error the JSON APIs and webhooks answer."""

    error: str = Field(description="a stable machine-readable code, e.g. `NotFound`, `unsigned`")
    detail: str = Field(description="a sentence for people; nothing was changed")
    request_id: str | None = Field(
        default=None, description="also in the gateway's log line for this request"
    )


class InvalidField(BaseModel):
    """One part of the request that was refused."""

    location: str = Field(description="where: `body.topic`, `path.switch_id`, `query.code`")
    message: str


class InvalidRequestBody(ErrorBody):
    """422: the request does not have the shape the operation takes."""

    fields: list[InvalidField] = Field(default_factory=list)


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="The sign-in token the platform signs for a tutor or student (see the README).",
)
session_cookie = APIKeyCookie(
    name="relink_session",  # RELINK_GATEWAY_SESSION_COOKIE; this is its default
    auto_error=False,
    scheme_name="session_cookie",
    description=(
        "The same token in the browser's session cookie; changes made with it must also "
        "carry the page's CSRF token in the `X-CSRF-Token` header."
    ),
)

platform_key = HTTPBearer(
    auto_error=False,
    scheme_name="platform_key",
    description=(
        "An API key of the platform's backend (`rk_…`, made with `relink keys api create`), "
        "for `/platform/v1`; each operation needs one of the key's scopes."
    ),
)

WHY = {
    302: "Redirect (see `Location`)",
    303: "Redirect to the page that shows the result (see `Location`)",
    400: "The request or the provider's answer was refused; nothing was changed",
    401: "Not signed in, or the sign-in (or a webhook's signature) is not valid",
    403: "Signed in, but not allowed (wrong role, stale CSRF token, another site)",
    404: "No such thing, or not yours",
    409: "That cannot be done in the current state",
    413: "The request body is too large",
    414: "The URL is too long",
    422: "The request is not valid",
    502: "The video provider answered with an error",
    503: "A dependency (the database, the video provider) is not answering; nothing was changed",
}


def answers(*codes: int, html: bool = False) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each status with its description and body.

    `html` is for the browser routes, whose errors are the error page.
    """
    documented: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"description": WHY[code]}
        if code in (302, 303):
            entry["headers"] = {"Location": {"schema": {"type": "string"}}}
        elif html:
            entry["content"] = {"text/html": {"schema": {"type": "string"}}}
        else:
            entry["model"] = InvalidRequestBody if code == 422 else ErrorBody
        documented[code] = entry
    return documented


# What every operation can answer whatever it does: the request guard's limits,
# and the database not answering.
ALWAYS = (413, 414, 503)
SIGNED_IN = (401, 403, *ALWAYS)
