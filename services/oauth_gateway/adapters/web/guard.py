"""The gateway's outer guard: request ids, size limits and security headers.

A pure ASGI middleware, outermost, so it acts before anything reads or
parses the request:

- **Request id.** Every request gets one (a sane `X-Request-ID` from a
  trusted proxy is kept, anything else replaced); it is in the response's
  `X-Request-ID`, in every error body, and in the log line of every error.
- **Limits.** A body larger than `max_body_bytes` is refused with 413 before
  it is read (by `Content-Length`) or as soon as it passes the limit (when
  streamed without one); a URL longer than `max_url_bytes` gets 414. Nothing
  of such a request reaches a route. (uvicorn bounds the header block.)
- **Headers.** `nosniff`, `Referrer-Policy: no-referrer` (URLs here can hold
  OAuth codes and states), no framing (`X-Frame-Options` and CSP
  `frame-ancestors`); HTML answers get a CSP allowing only this origin's
  scripts and styles, and `Cache-Control: no-store` (pages carry CSRF tokens).
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


class BodyTooLarge(Exception):
    """The streamed body passed the limit."""


def request_id_of(scope: Scope) -> str:
    """The id the guard gave this request ("-" outside the guard, e.g. in a bare test app)."""
    return str(scope.get("state", {}).get("request_id", "-"))


class RequestGuard:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_url_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_url_bytes = max_url_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        too_large = f"the request body is larger than {self.max_body_bytes} bytes"
        started = False
        cut = False  # the body passed the limit: whatever the app answers becomes a 413

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                if started:
                    return
                started = True
                if cut:
                    await _refuse(send, 413, "body_too_large", too_large, request_id)
                    return
                message["headers"] = _secure(list(message.get("headers", [])), request_id)
            elif cut:
                return  # the app's own answer to a cut body is dropped
            await send(message)

        url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(
            scope.get("query_string", b"")
        )
        if url_bytes > self.max_url_bytes:
            await _refuse(send, 414, "url_too_long", "the URL is too long", request_id)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _refuse(send, 413, "body_too_large", too_large, request_id)
            return
        seen = 0

        async def counted_receive() -> Message:
            nonlocal seen, cut
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    cut = True
                    raise BodyTooLarge
            return message

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counted_receive, send_with_headers)
        if cut and not started:
            await _refuse(send, 413, "body_too_large", too_large, request_id)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER.encode():
            given = bytes(value).decode("latin-1")
            if _SANE_ID.match(given):
                return given
    return uuid.uuid4().hex


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _secure(headers: list[tuple[bytes, bytes]], request_id: str) -> list[tuple[bytes, bytes]]:
    names = {name.lower() for name, _ in headers}
    out = [h for h in headers if h[0].lower() != REQUEST_ID_HEADER.encode()]
    out.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
    out.extend(h for h in ALWAYS if h[0] not in names)
    content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
    if content_type.startswith(b"text/html"):
        if b"content-security-policy" not in names:
            out.append((b"content-security-policy", CSP.encode()))
        out = [h for h in out if h[0].lower() != b"cache-control"]
        out.append((b"cache-control", b"no-store"))
    return out


async def _refuse(send: Send, status: int, error: str, detail: str, request_id: str) -> None:
    body = json.dumps({"error": error, "detail": detail, "request_id": request_id}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _secure(headers, request_id),
        }
    )
    await send({"type": "http.response.body", "body": body})
