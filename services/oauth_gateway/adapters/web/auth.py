"""The platform's sign-in tokens: who is asking, checked with an HMAC.

The platform around relink signs people in and hands the gateway a token,
as the `relink_session` cookie or an `Authorization: Bearer` header:

    v1.<base64url(JSON {"sub": user id, "role": "tutor"|"student", "exp": unix s})>.<base64url(sig)>

where `sig` = HMAC-SHA256(RELINK_GATEWAY_SESSION_SECRET, "v1." + payload part).
The dev sign-in page issues the same tokens with `issue_token`.

Forms posted with the cookie also carry a CSRF token: an HMAC of the session
token, so another site cannot make a signed-in browser post to us.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

from services.oauth_gateway.domain import ROLES, Principal, Role
from services.oauth_gateway.errors import NotSignedIn

VERSION = "v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, message: str) -> str:
    return _b64(hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest())


def issue_token(
    user_id: uuid.UUID | str, *, role: Role, secret: str, ttl_s: int, now: float | None = None
) -> str:
    """A signed token naming the user and role, valid for `ttl_s` seconds."""
    issued = int(time.time() if now is None else now)
    payload = {"sub": str(user_id), "role": role, "exp": issued + ttl_s}
    body = f"{VERSION}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}"
    return f"{body}.{_sign(secret, body)}"


def verify_token(token: str, *, secret: str, now: float | None = None) -> Principal:
    """The principal a token names; `NotSignedIn` if it is malformed, forged or expired."""
    version, _, rest = token.partition(".")
    payload_part, _, signature = rest.partition(".")
    if version != VERSION or not payload_part or not signature:
        raise NotSignedIn("malformed sign-in token")
    if not hmac.compare_digest(_sign(secret, f"{version}.{payload_part}"), signature):
        raise NotSignedIn("sign-in token signature does not match")
    try:
        payload = json.loads(_unb64(payload_part))
        principal = Principal(
            user_id=uuid.UUID(str(payload["sub"])),
            role=payload["role"],
            expires_at=int(payload["exp"]),
        )
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        # OverflowError: a signed `"exp": Infinity` (json reads it as float inf)
        raise NotSignedIn("malformed sign-in token payload") from exc
    if principal.role not in ROLES:
        raise NotSignedIn("sign-in token names an unknown role")
    if principal.expires_at <= (time.time() if now is None else now):
        raise NotSignedIn("sign-in token expired")
    return principal


def csrf_token(session_token: str, *, secret: str) -> str:
    """The CSRF token forms carry for this session."""
    return _sign(secret, f"csrf|{session_token}")


def csrf_valid(session_token: str, candidate: str | None, *, secret: str) -> bool:
    """Whether a posted CSRF token belongs to this session."""
    return bool(candidate) and hmac.compare_digest(
        csrf_token(session_token, secret=secret), candidate or ""
    )
