"""PostgreSQL of the webhook dispatcher: endpoints, deliveries, attempts.

SQLAlchemy 2 expressions over `services/core/db/models.py`; each method runs in the
caller's transaction (`WebhooksDb.transaction`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import extract, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from services.core.db.engine import TransactionalStore
from services.core.db.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookEndpoint,
)
from services.webhooks.domain import Answer, Due, Endpoint, Owed

PENDING = WebhookDeliveryState.PENDING.value


class WebhooksDb(TransactionalStore):
    """Queries and writes of the dispatcher and of `relink webhooks endpoints|replay|log`."""

    # -- endpoints ---------------------------------------------------------------

    def add_endpoint(self, s: Session, **values: Any) -> None:
        s.execute(insert(WebhookEndpoint).values(**values))

    def endpoints(self, s: Session) -> list[Endpoint]:
        e = WebhookEndpoint
        return [
            Endpoint(
                id=r.id,
                event_types=r.event_types,
                enabled=r.disabled_at is None,
                created_at=r.created_at,
            )
            for r in s.execute(
                select(e.id, e.event_types, e.disabled_at, e.created_at).order_by(e.created_at)
            )
        ]

    def endpoint_rows(self, s: Session) -> list[dict[str, Any]]:
        """Every endpoint with its delivery counts (never its secret)."""
        e, d = WebhookEndpoint, WebhookDelivery
        counts = (
            select(d.endpoint_id, d.state, func.count().label("n"))
            .group_by(d.endpoint_id, d.state)
            .subquery()
        )
        rows = [
            dict(r)
            for r in s.execute(
                select(
                    e.id,
                    e.name,
                    e.url,
                    e.event_types,
                    e.created_at,
                    e.disabled_at,
                    e.disabled_reason,
                    e.failure_streak,
                ).order_by(e.created_at)
            ).mappings()
        ]
        by_id: dict[str, dict[str, int]] = {}
        for r in s.execute(select(counts.c.endpoint_id, counts.c.state, counts.c.n)):
            by_id.setdefault(r.endpoint_id, {})[r.state] = int(r.n)
        for row in rows:
            row["deliveries"] = by_id.get(row["id"], {})
        return rows

    def lock_endpoint(self, s: Session, endpoint_id: str) -> dict[str, Any] | None:
        e = WebhookEndpoint
        row = (
            s.execute(
                select(e.id, e.disabled_at, e.failure_streak, e.failing_since)
                .where(e.id == endpoint_id)
                .with_for_update()
            )
            .mappings()
            .first()
        )
        return dict(row) if row is not None else None

    def set_endpoint(self, s: Session, endpoint_id: str, **values: Any) -> None:
        s.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    def skip_pending(self, s: Session, endpoint_id: str) -> int:
        """A disabled endpoint's pending deliveries become SKIPPED (a replay sends them)."""
        d = WebhookDelivery
        result = s.execute(
            update(d)
            .where(d.endpoint_id == endpoint_id, d.state == PENDING)
            .values(state=WebhookDeliveryState.SKIPPED.value)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    # -- deliveries --------------------------------------------------------------

    def owe(self, s: Session, owed: Sequence[Owed]) -> int:
        """Insert deliveries; one already there (same endpoint and event) changes nothing."""
        if not owed:
            return 0
        d = WebhookDelivery
        rows = [
            {
                "endpoint_id": o.endpoint_id,
                "message_id": o.message_id,
                "event_source": o.event_source,
                "event_id": o.event_id,
                "event_type": o.event_type,
                "event_time": o.event_time,
                "body": o.body,
                "state": (
                    WebhookDeliveryState.SKIPPED if o.skipped else WebhookDeliveryState.PENDING
                ).value,
            }
            for o in owed
        ]
        result = s.execute(insert(d).values(rows).on_conflict_do_nothing().returning(d.id))
        return len(result.all())

    def next_due(self, s: Session, now: datetime) -> Due | None:
        """Lock the oldest due delivery of an enabled endpoint, and its endpoint's row;
        another dispatcher skips both while this one sends."""
        d, e = WebhookDelivery, WebhookEndpoint
        row = (
            s.execute(
                select(
                    d.id,
                    d.endpoint_id,
                    e.url,
                    e.secret_encrypted,
                    d.message_id,
                    d.event_type,
                    d.body,
                    d.attempts,
                    e.failure_streak,
                    e.failing_since,
                    d.event_time,
                )
                .join(e, e.id == d.endpoint_id)
                .where(d.state == PENDING, d.next_attempt_at <= now, e.disabled_at.is_(None))
                .order_by(d.next_attempt_at, d.id)
                .limit(1)
                .with_for_update(of=[d, e], skip_locked=True)
            )
            .mappings()
            .first()
        )
        return Due(**row) if row is not None else None

    def record_attempt(
        self, s: Session, due: Due, answer: Answer, *, at: datetime, **delivery: Any
    ) -> None:
        s.execute(
            insert(WebhookAttempt).values(
                delivery_id=due.id,
                endpoint_id=due.endpoint_id,
                attempted_at=at,
                status_code=answer.status_code,
                error=answer.error,
                duration_ms=answer.duration_ms,
            )
        )
        s.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == due.id)
            .values(
                attempts=WebhookDelivery.attempts + 1,
                last_status_code=answer.status_code,
                last_error=answer.error,
                **delivery,
            )
            .execution_options(synchronize_session=False)
        )

    def seconds_to_next_due(self, s: Session, now: datetime) -> float | None:
        d, e = WebhookDelivery, WebhookEndpoint
        value = s.execute(
            select(extract("epoch", func.min(d.next_attempt_at) - now))
            .join(e, e.id == d.endpoint_id)
            .where(d.state == PENDING, e.disabled_at.is_(None))
        ).scalar()
        return None if value is None else max(0.0, float(value))

    def replay(
        self, s: Session, *, since: datetime, endpoint_ids: Sequence[str], at: datetime
    ) -> int:
        """Send again every delivery of these endpoints whose event is at or after `since`."""
        d = WebhookDelivery
        result = s.execute(
            update(d)
            .where(d.endpoint_id.in_(list(endpoint_ids)), d.event_time >= since)
            .values(state=PENDING, attempts=0, next_attempt_at=at, delivered_at=None)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def delivery_log(
        self, s: Session, *, endpoint_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """The latest attempts, newest first, with their delivery's event and state."""
        a, d = WebhookAttempt, WebhookDelivery
        query = (
            select(
                a.attempted_at,
                a.endpoint_id,
                d.message_id,
                d.event_type,
                a.status_code,
                a.error,
                a.duration_ms,
                d.state,
                d.attempts,
                d.next_attempt_at,
            )
            .join(d, d.id == a.delivery_id)
            .order_by(a.attempted_at.desc(), a.id.desc())
            .limit(limit)
        )
        if endpoint_id is not None:
            query = query.where(a.endpoint_id == endpoint_id)
        return [dict(r) for r in s.execute(query).mappings()]
