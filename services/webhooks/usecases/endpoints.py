"""Endpoints: register, list, disable, enable; replay deliveries; read the delivery log.

A secret is generated here (or given, `whsec_…`), shown once to the caller, and
stored only encrypted (`services/core/tokens.py`, bound to the endpoint's id). It
is never logged.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.core.logs import get_logger
from services.core.tokens import TokenCipher
from services.webhooks import domain
from services.webhooks.adapters.db import WebhooksDb
from services.webhooks.errors import EndpointError

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Registered:
    id: str
    secret: str  # shown once


class Endpoints:
    def __init__(
        self,
        *,
        db: WebhooksDb,
        cipher: TokenCipher,
        dev_mode: bool,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.cipher = cipher
        self.dev_mode = dev_mode
        self.clock = clock

    def add(
        self, *, url: str, event_types: list[str], name: str = "", secret: str | None = None
    ) -> Registered:
        """Register an endpoint; its secret is the one given or a fresh one."""
        domain.check_url(url, dev_mode=self.dev_mode)
        types = domain.event_types_of(event_types)
        if secret is None:
            secret = domain.format_secret(os.urandom(domain.SECRET_BYTES))
        domain.parse_secret(secret)
        endpoint_id = domain.ENDPOINT_PREFIX + secrets.token_hex(8)
        with self.db.transaction() as s:
            self.db.add_endpoint(
                s,
                id=endpoint_id,
                name=name,
                url=url,
                event_types=types,
                secret_encrypted=self.cipher.encrypt(
                    secret, tutor_id=endpoint_id, field=domain.SECRET_FIELD
                ),
            )
        log.info("webhook endpoint %s registered", endpoint_id, extra={"endpoint_id": endpoint_id})
        return Registered(endpoint_id, secret)

    def all(self) -> list[dict[str, Any]]:
        with self.db.transaction() as s:
            return self.db.endpoint_rows(s)

    def disable(self, endpoint_id: str, *, reason: str = "by hand") -> int:
        """Stop sending to an endpoint; its pending deliveries become SKIPPED (how many)."""
        with self.db.transaction() as s:
            row = self.db.lock_endpoint(s, endpoint_id)
            if row is None:
                raise EndpointError(f"no webhook endpoint {endpoint_id}")
            if row["disabled_at"] is not None:
                return 0
            self.db.set_endpoint(s, endpoint_id, disabled_at=self.clock(), disabled_reason=reason)
            skipped = self.db.skip_pending(s, endpoint_id)
        log.info("webhook endpoint %s disabled", endpoint_id, extra={"endpoint_id": endpoint_id})
        return skipped

    def enable(self, endpoint_id: str) -> None:
        """Send to an endpoint again (new events; `replay` sends what it missed)."""
        with self.db.transaction() as s:
            if self.db.lock_endpoint(s, endpoint_id) is None:
                raise EndpointError(f"no webhook endpoint {endpoint_id}")
            self.db.set_endpoint(
                s,
                endpoint_id,
                disabled_at=None,
                disabled_reason=None,
                failure_streak=0,
                failing_since=None,
            )
        log.info("webhook endpoint %s enabled", endpoint_id, extra={"endpoint_id": endpoint_id})

    def replay(self, *, since: datetime, endpoint_id: str | None = None) -> int:
        """Deliver again every event at or after `since` to the endpoint (or every enabled
        one), whatever became of it before; how many deliveries were queued."""
        with self.db.transaction() as s:
            endpoints = self.db.endpoints(s)
            if endpoint_id is not None:
                chosen = [e for e in endpoints if e.id == endpoint_id]
                if not chosen:
                    raise EndpointError(f"no webhook endpoint {endpoint_id}")
                if not chosen[0].enabled:
                    raise EndpointError(
                        f"webhook endpoint {endpoint_id} is disabled; enable it first"
                    )
            else:
                chosen = [e for e in endpoints if e.enabled]
            return self.db.replay(
                s, since=since, endpoint_ids=[e.id for e in chosen], at=self.clock()
            )

    def delivery_log(self, *, endpoint_id: str | None, limit: int) -> list[dict[str, Any]]:
        with self.db.transaction() as s:
            return self.db.delivery_log(s, endpoint_id=endpoint_id, limit=limit)
