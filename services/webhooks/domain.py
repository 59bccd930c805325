"""Pure rules of the webhook dispatcher: Standard Webhooks secrets and signatures, the
body sent for an event, which endpoint wants which event, the retry schedule and when an
endpoint has failed long enough to be disabled. No I/O, no clock reads.

Standard Webhooks (https://www.standardwebhooks.com, spec/standard-webhooks.md):

- the secret is `whsec_` + base64 of the key (24 to 64 random bytes);
- the signed content is `{webhook-id}.{webhook-timestamp}.{body}`;
- `webhook-signature` is `v1,` + base64(HMAC-SHA256(key, signed content)),
  space-separated when several (secret rotation);
- `webhook-id` is the message's id, the same on every retry (the receiver's
  idempotency key); `webhook-timestamp` is the attempt's time in integer Unix
  seconds (receivers refuse one too far from their clock).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from services.core.events import EventType, rfc3339
from services.webhooks.errors import EndpointError, SecretError

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
ENDPOINT_PREFIX = "we_"
MESSAGE_PREFIX = "msg_"
# The logical consumer of the tracking records (services/core/tracking.py).
CONSUMER = "webhooks"
# The field a secret's ciphertext is bound to (services/core/tokens.py).
SECRET_FIELD = "webhook_secret"
ERROR_MAX_CHARS = 300


def format_secret(key: bytes) -> str:
    """A key as the `whsec_…` secret the platform configures in its receiver."""
    return SECRET_PREFIX + base64.b64encode(key).decode()


def parse_secret(secret: str) -> bytes:
    """The key of a `whsec_…` secret; SecretError if it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise SecretError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretError("a webhook secret is whsec_ followed by base64") from exc
    if not 24 <= len(key) <= 64:
        raise SecretError("a webhook secret's key is 24 to 64 bytes")
    return key


def sign(key: bytes, *, message_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header value: `v1,<base64 HMAC-SHA256>`."""
    content = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(key: bytes, *, message_id: str, timestamp: int, body: str) -> dict[str, str]:
    """Every header of one attempt."""
    return {
        "content-type": "application/json",
        "user-agent": "relink-webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, message_id=message_id, timestamp=timestamp, body=body),
    }


def message_id(event_id: str) -> str:
    """The `webhook-id` of an event's message: the same for every endpoint and every retry."""
    return MESSAGE_PREFIX + event_id


def body_of(event_type: str, event_time: datetime, data: dict[str, object], event_id: str) -> str:
    """The JSON body: Standard Webhooks' `type`, `timestamp`, `data` (plus the event's id)."""
    return json.dumps(
        {"type": event_type, "timestamp": rfc3339(event_time), "id": event_id, "data": data},
        separators=(",", ":"),
        sort_keys=True,
    )


def event_types_of(names: list[str]) -> str:
    """The stored form of an endpoint's event types (space-separated; empty: all)."""
    known = {str(t) for t in EventType}
    unknown = sorted(set(names) - known)
    if unknown:
        raise EndpointError(
            f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return " ".join(sorted(set(names)))


def wants(endpoint: Endpoint, event_type: str, event_time: datetime) -> bool:
    """Whether an endpoint receives an event: one of its types (none: all), and not from
    before it was registered (a new endpoint is not sent the topics' whole history)."""
    types = endpoint.event_types.split()
    return (not types or event_type in types) and event_time >= endpoint.created_at


def check_url(url: str, *, dev_mode: bool) -> str:
    """An endpoint URL: https (plain http only in dev mode), with a host, no credentials."""
    parts = urlsplit(url)
    allowed = ("https", "http") if dev_mode else ("https",)
    if parts.scheme not in allowed or not parts.hostname:
        raise EndpointError(
            "an endpoint URL is https://host/... (http:// only in dev mode)"
            if not dev_mode
            else "an endpoint URL is http(s)://host/..."
        )
    if parts.username or parts.password:
        raise EndpointError("an endpoint URL must not carry credentials; the signature is the auth")
    return url


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint as the dispatcher matches events to it."""

    id: str
    event_types: str
    enabled: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Owed:
    """One delivery to record: an event for an endpoint."""

    endpoint_id: str
    message_id: str
    event_source: str
    event_id: str
    event_type: str
    event_time: datetime
    body: str
    skipped: bool  # the endpoint is disabled: recorded, not sent (a replay sends it)


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery whose time has come, with what it takes to send it."""

    id: int
    endpoint_id: str
    url: str
    secret_encrypted: bytes
    message_id: str
    event_type: str
    body: str
    attempts: int
    failure_streak: int
    failing_since: datetime | None
    # when the event happened: the delivery latency histogram counts from it
    event_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What one HTTP attempt got: a status code, or an error (no answer)."""

    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def summary(self) -> str:
        if self.status_code is not None:
            return f"HTTP {self.status_code}"
        return (self.error or "no answer")[:ERROR_MAX_CHARS]


def retry_delay_s(attempts: int, schedule: tuple[float, ...]) -> float | None:
    """The wait after the `attempts`-th failed attempt; None once the schedule is spent."""
    if attempts < 1 or attempts > len(schedule):
        return None
    return schedule[attempts - 1]


def should_disable(
    *,
    streak: int,
    failing_since: datetime,
    now: datetime,
    after_failures: int,
    after_s: float,
) -> bool:
    """Whether an endpoint has failed long enough (both in attempts and in time)."""
    return streak >= after_failures and now - failing_since >= timedelta(seconds=after_s)


def disabled_reason(streak: int, failing_since: datetime) -> str:
    return f"automatically: {streak} attempts in a row failed since {rfc3339(failing_since)}"
