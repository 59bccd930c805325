"""Zoom's event notifications (webhooks): signature, URL validation, the events relink reads.

No I/O (the clock is passed in). Zoom's rules, from "Using webhooks"
(developers.zoom.us/docs/api/webhooks/):

- Every notification carries `x-zm-request-timestamp` and `x-zm-signature`,
  the latter `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{raw body}` keyed with
  the app's Secret Token. Zoom advises checking the timestamp too, so an old
  (captured) notification cannot be replayed.
- `endpoint.url_validation` carries `payload.plainToken`; the endpoint answers
  `{"plainToken": p, "encryptedToken": hex HMAC-SHA256(secret token, p)}`.
- `app_deauthorized` ("Deauthorization" in Zoom's app docs): a user removed the
  app; `payload.user_id` / `payload.account_id` / `payload.client_id` /
  `payload.deauthorization_time`.
- `meeting.deleted` (Meetings webhook reference): `payload.object.id` is the
  meeting id, `payload.object.host_id` its host.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.oauth_gateway.errors import NotificationRefused

SIGNATURE_VERSION = "v0"
URL_VALIDATION = "endpoint.url_validation"
APP_DEAUTHORIZED = "app_deauthorized"
MEETING_DELETED = "meeting.deleted"


def hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature(secret: str, *, timestamp: str, body: bytes) -> str:
    """The `x-zm-signature` Zoom sends for this body at this timestamp."""
    return f"{SIGNATURE_VERSION}=" + hmac_hex(
        secret, f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    )


def verify(
    secret: str,
    *,
    timestamp: str | None,
    given: str | None,
    body: bytes,
    now: datetime,
    max_skew_s: float,
) -> None:
    """Raise `NotificationRefused` unless the signature is Zoom's and the timestamp is recent."""
    if not timestamp or not given:
        raise NotificationRefused("unsigned notification", reason="unsigned")
    expected = signature(secret, timestamp=timestamp, body=body)
    # Constant time: the comparison must not tell a forger how much of it was right.
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise NotificationRefused("bad signature", reason="bad_signature")
    try:
        # Zoom's timestamp is epoch milliseconds (tolerate seconds).
        value = int(timestamp)
    except ValueError as exc:
        raise NotificationRefused("bad timestamp", reason="bad_timestamp") from exc
    seconds = value / 1000 if value > 10**11 else float(value)
    if abs(now.timestamp() - seconds) > max_skew_s:
        raise NotificationRefused("stale notification", reason="stale")


def url_validation_answer(secret: str, plain_token: str) -> dict[str, str]:
    """Zoom's challenge answer: the plain token and its HMAC-SHA256 under the secret token."""
    return {"plainToken": plain_token, "encryptedToken": hmac_hex(secret, plain_token.encode())}


def notification_id(body: bytes) -> str:
    """What makes a notification "the same one": the hash of its signed body.

    A Zoom retry of one event repeats its body (event_ts included); a replay
    under a fresh timestamp needs a fresh signature, i.e. the secret token.
    """
    return "zoom:" + hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class Deauthorized:
    """`app_deauthorized`: the user removed relink's app."""

    user_id: str
    account_id: str | None
    deauthorized_at: datetime


@dataclass(frozen=True, slots=True)
class MeetingDeleted:
    """`meeting.deleted`: a meeting was deleted at Zoom."""

    meeting_id: str
    host_id: str | None
    deleted_at: datetime


@dataclass(frozen=True, slots=True)
class UrlValidation:
    plain_token: str


@dataclass(frozen=True, slots=True)
class Other:
    """An event relink does not act on (acknowledged, so Zoom does not retry it)."""

    event: str


Notification = Deauthorized | MeetingDeleted | UrlValidation | Other


def parse(body: bytes, *, now: datetime) -> Notification:
    """The notification in a (verified) body; `NotificationRefused` when it is malformed."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise NotificationRefused("not JSON", reason="malformed") from exc
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        raise NotificationRefused("no event name", reason="malformed")
    event: str = data["event"]
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise NotificationRefused("no payload", reason="malformed")
    at = _event_time(data.get("event_ts"), now=now)
    if event == URL_VALIDATION:
        token = payload.get("plainToken")
        if not isinstance(token, str) or not token:
            raise NotificationRefused("no plainToken", reason="malformed")
        return UrlValidation(token)
    if event == APP_DEAUTHORIZED:
        user = payload.get("user_id")
        if not isinstance(user, str) or not user:
            raise NotificationRefused("no user_id", reason="malformed")
        account = payload.get("account_id")
        when = _iso(payload.get("deauthorization_time")) or at
        return Deauthorized(user, account if isinstance(account, str) else None, when)
    if event == MEETING_DELETED:
        obj = payload.get("object")
        if not isinstance(obj, dict) or obj.get("id") in (None, ""):
            raise NotificationRefused("no meeting id", reason="malformed")
        host = obj.get("host_id")
        return MeetingDeleted(str(obj["id"]), host if isinstance(host, str) else None, at)
    return Other(event)


def _event_time(value: Any, *, now: datetime) -> datetime:
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(value / 1000 if value > 10**11 else value, UTC)
    return now


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
