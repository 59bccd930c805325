"""The dispatcher's use cases: record what each consumed event owes each endpoint, then
deliver what is due, one transaction per attempt.

At least once:

1. `record` inserts, in ONE transaction, the batch's tracking records
   (consumer `webhooks`) and one `webhook_deliveries` row per (matching
   endpoint, event); the loop commits the Kafka offsets only after that commit.
   A redelivered event finds its tracking record and owes nothing new.
2. `deliver_due` locks one due row (`FOR UPDATE SKIP LOCKED`, with its
   endpoint's row), POSTs it, and records the attempt and the new state in the
   same transaction. A dispatcher killed before the COMMIT leaves the row as it
   was: it is sent again after the restart, with the same `webhook-id` (the
   receiver's idempotency key) -- the duplicate window, chosen over losing one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from services.core import metrics, tracking
from services.core.db.models import WebhookDeliveryState
from services.core.logs import get_logger
from services.core.tokens import TokenCipher, TokenDecryptError
from services.webhooks import domain
from services.webhooks.adapters.db import WebhooksDb
from services.webhooks.adapters.http import WebhookSender
from services.webhooks.adapters.kafka import Received
from services.webhooks.errors import SecretError
from services.webhooks.settings import WebhooksSettings

log = get_logger(__name__)
NO_KEY = "not sent: the endpoint's secret does not decrypt with RELINK_TOKEN_KEYS"


@dataclass
class DeliverReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


class Dispatcher:
    def __init__(
        self,
        *,
        db: WebhooksDb,
        sender: WebhookSender,
        cipher: TokenCipher,
        settings: WebhooksSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.sender = sender
        self.cipher = cipher
        self.settings = settings
        self.clock = clock

    def record(self, batch: Sequence[Received]) -> int:
        """Record the batch's tracking records and the deliveries it owes; how many owed."""
        if not batch:
            return 0
        with self.db.transaction() as s:
            new = tracking.track(s, [_tracked(r) for r in batch])
            endpoints = self.db.endpoints(s)
            owed: list[domain.Owed] = []
            seen: set[tuple[str, str]] = set()
            for received in batch:
                event = received.event
                if event.dedup_key not in new or event.dedup_key in seen:
                    continue
                seen.add(event.dedup_key)
                body = domain.body_of(event.type, event.time, event.data, event.id)
                owed.extend(
                    domain.Owed(
                        endpoint_id=endpoint.id,
                        message_id=domain.message_id(event.id),
                        event_source=event.source,
                        event_id=event.id,
                        event_type=event.type,
                        event_time=event.time,
                        body=body,
                        skipped=not endpoint.enabled,
                    )
                    for endpoint in endpoints
                    if domain.wants(endpoint, event.type, event.time)
                )
            return self.db.owe(s, owed)

    def deliver_due(self, *, limit: int, budget_s: float) -> DeliverReport:
        """Attempt up to `limit` due deliveries, one transaction each, starting none after
        `budget_s` (slow endpoints must not keep the loop from polling Kafka for longer
        than its max.poll.interval.ms, or the group would take the partitions away)."""
        report = DeliverReport()
        started = time.monotonic()
        for _ in range(limit):
            if time.monotonic() - started > budget_s:
                break
            with self.db.transaction() as s:
                now = self.clock()
                due = self.db.next_due(s, now)
                if due is None:
                    break
                key = self._key(due)
                answer = (
                    self.sender.post(
                        due.url,
                        body=due.body,
                        headers=domain.headers(
                            key,
                            message_id=due.message_id,
                            timestamp=int(now.timestamp()),
                            body=due.body,
                        ),
                    )
                    if key is not None
                    else domain.Answer(None, NO_KEY, 0)
                )
                attempt = due.attempts + 1
                disabled = False
                settled: str | None = None  # delivered or failed: the delivery's last attempt
                if answer.ok:
                    self.db.record_attempt(
                        s,
                        due,
                        answer,
                        at=now,
                        state=WebhookDeliveryState.DELIVERED.value,
                        delivered_at=self.clock(),
                    )
                    if due.failure_streak:
                        self.db.set_endpoint(
                            s, due.endpoint_id, failure_streak=0, failing_since=None
                        )
                    outcome, level = f"delivered ({answer.summary})", logging.INFO
                    settled = "delivered"
                    report.delivered += 1
                else:
                    delay = domain.retry_delay_s(attempt, self.settings.retry_schedule)
                    if delay is None:
                        self.db.record_attempt(
                            s, due, answer, at=now, state=WebhookDeliveryState.FAILED.value
                        )
                        outcome = f"failed for good after {attempt} attempts ({answer.summary})"
                        settled = "failed"
                        report.failed += 1
                    else:
                        self.db.record_attempt(
                            s, due, answer, at=now, next_attempt_at=now + timedelta(seconds=delay)
                        )
                        outcome = f"to be retried in {delay:g}s ({answer.summary})"
                        report.retrying += 1
                    level = logging.WARNING
                    disabled = self._failed(s, due, now)
            _count(due, answer, settled=settled, sent=key is not None, disabled=disabled, at=now)
            log.log(
                level,
                "webhook %s (%s, attempt %d) to endpoint %s %s",
                due.message_id,
                due.event_type,
                attempt,
                due.endpoint_id,
                outcome,
                extra={"endpoint_id": due.endpoint_id, "delivery_id": due.id},
            )
            if disabled:
                log.warning(
                    "endpoint %s disabled after %d failed attempts in a row; "
                    "`relink webhooks endpoints enable` and `relink webhooks replay` resume it",
                    due.endpoint_id,
                    due.failure_streak + 1,
                    extra={"endpoint_id": due.endpoint_id},
                )
        return report

    def _key(self, due: domain.Due) -> bytes | None:
        """The endpoint's signing key; None if its secret does not decrypt here (a key
        missing from RELINK_TOKEN_KEYS): the attempt fails and is retried, nothing unsigned
        is ever sent."""
        try:
            plain = self.cipher.decrypt(
                due.secret_encrypted, tutor_id=due.endpoint_id, field=domain.SECRET_FIELD
            )
            return domain.parse_secret(plain)
        except (TokenDecryptError, SecretError) as exc:
            log.error(
                "endpoint %s: its secret cannot be used: %s",
                due.endpoint_id,
                type(exc).__name__,
                extra={"endpoint_id": due.endpoint_id},
            )
            return None

    def _failed(self, s: Session, due: domain.Due, now: datetime) -> bool:
        """Count the failure in the endpoint's streak; disable it when the streak is long
        enough. True if it was disabled."""
        streak = due.failure_streak + 1
        since = due.failing_since or now
        if domain.should_disable(
            streak=streak,
            failing_since=since,
            now=now,
            after_failures=self.settings.disable_after_failures,
            after_s=self.settings.disable_after_s,
        ):
            self.db.set_endpoint(
                s,
                due.endpoint_id,
                failure_streak=streak,
                failing_since=since,
                disabled_at=now,
                disabled_reason=domain.disabled_reason(streak, since),
            )
            self.db.skip_pending(s, due.endpoint_id)
            return True
        self.db.set_endpoint(s, due.endpoint_id, failure_streak=streak, failing_since=since)
        return False

    def seconds_to_next_send(self) -> float | None:
        with self.db.transaction() as s:
            return self.db.seconds_to_next_due(s, self.clock())


def _count(
    due: domain.Due,
    answer: domain.Answer,
    *,
    settled: str | None,
    sent: bool,
    disabled: bool,
    at: datetime,
) -> None:
    """The attempt in the dispatcher's Prometheus series (once its transaction committed)."""
    if answer.status_code is not None:
        status = str(answer.status_code)
    else:
        status = "transport_error" if sent else "no_key"
    metrics.WEBHOOK_ATTEMPTS.labels(status=status).inc()
    if sent:
        metrics.WEBHOOK_ATTEMPT_SECONDS.labels(ok=str(answer.ok).lower()).observe(
            answer.duration_ms / 1000
        )
    if settled is not None:
        metrics.WEBHOOK_DELIVERIES.labels(outcome=settled).inc()
    if settled == "delivered" and due.event_time is not None:
        metrics.WEBHOOK_DELIVERY_SECONDS.observe(max(0.0, (at - due.event_time).total_seconds()))
    if disabled:
        metrics.WEBHOOK_ENDPOINTS_DISABLED.inc()


def _tracked(received: Received) -> tracking.Delivery:
    return tracking.Delivery.of(
        domain.CONSUMER,
        received.event,
        topic=received.topic,
        partition=received.partition,
        offset=received.offset,
    )
