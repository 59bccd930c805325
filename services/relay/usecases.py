"""What the relay does: lease slots, publish one batch, housekeeping.

Each batch is one claim-publish-mark transaction on the store's connection:
batch N+1 is claimed only after batch N is acknowledged and marked, and each
batch is produced in id order through one idempotent producer, so a tutor's
events reach their partition in the order their rows were written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.core.logs import get_logger
from services.relay.adapters.db import OutboxStore
from services.relay.adapters.kafka import KafkaPublisher
from services.relay.domain import owns_everything, settle, wanted_slots
from services.relay.errors import PublishFailed
from services.relay.metrics import RelayMetrics
from services.relay.settings import RelaySettings

log = get_logger(__name__)

# Exit status of the fault-injection hook, distinct from crashes and signals.
CRASH_EXIT_CODE = 86
LEASE_RETRY_S = 2.0


@dataclass
class RelayUseCases:
    """The relay's use cases over its store and publisher; built by `bootstrap`."""

    settings: RelaySettings
    store: OutboxStore
    publisher: KafkaPublisher
    metrics: RelayMetrics
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.wanted = wanted_slots(
            instance=self.settings.instance,
            instances=self.settings.instances,
            slot_count=self.settings.slot_count,
        )
        self._next_lease_at = 0.0
        self._next_metrics_at = 0.0
        self._next_cleanup_at = 0.0

    def step(self) -> int:
        """Connect if needed, lease, keep house, publish one batch; return rows claimed."""
        self.store.connect()
        self.metrics.database_available = True
        held = self.lease_slots()
        self.housekeeping()
        if not held:
            return 0
        return self.publish_batch(held)

    def publish_batch(self, held: set[int]) -> int:
        """Claim up to batch_size rows, publish them, mark the acknowledged ones."""
        slots = None if owns_everything(held, slot_count=self.settings.slot_count) else held
        with self.store.batch() as batch:
            rows = batch.claim(
                limit=self.settings.batch_size, slots=slots, slot_count=self.settings.slot_count
            )
            if not rows:
                return 0
            outcome = settle(self.publisher.publish(rows))
            if self.settings.crash_after_publish and outcome.published:
                # fault injection: acknowledged by Kafka, not marked in PostgreSQL
                log.warning("RELINK_RELAY_CRASH_AFTER_PUBLISH: exiting before the mark")
                os._exit(CRASH_EXIT_CODE)
            batch.mark_published(outcome.published)
            batch.record_failure(outcome.failed, error=outcome.first_error or "")
        self.metrics.add_batch(published=len(outcome.published), failed=len(outcome.failed))
        self.metrics.kafka_available = not outcome.failed
        if outcome.failed:
            self.publisher.reset_if_fatal()
            raise PublishFailed(
                f"{len(outcome.failed)} of {len(rows)} events not acknowledged: "
                f"{outcome.first_error}"
            )
        return len(rows)

    def lease_slots(self) -> set[int]:
        """The slots held, after trying (at most every LEASE_RETRY_S) for the missing ones."""
        held = self.store.held_slots
        if len(held) < len(self.wanted) and self.clock() >= self._next_lease_at:
            held = self.store.lease_slots(self.wanted)
            self._next_lease_at = self.clock() + LEASE_RETRY_S
            if len(held) < len(self.wanted):
                log.info(
                    "holding %d of %d wanted slots; another relay has the rest",
                    len(held),
                    len(self.wanted),
                )
        self.metrics.slots_held = len(held)
        return set(held)

    def housekeeping(self) -> None:
        """When due: refresh the backlog figures and log them; delete old published rows."""
        now = self.clock()
        if now >= self._next_metrics_at:
            self._next_metrics_at = now + self.settings.metrics_interval_s
            rows, age = self.store.backlog()
            self.metrics.set_backlog(rows=rows, oldest_age_s=age)
            log.info("relay metrics %s", self.metrics.summary())
        if now >= self._next_cleanup_at:
            self._next_cleanup_at = now + self.settings.cleanup_interval_s
            deleted = self.store.delete_published(older_than_s=self.settings.retention_hours * 3600)
            if deleted:
                log.info(
                    "deleted %d rows published over %sh ago", deleted, self.settings.retention_hours
                )

    def wait_for_insert(self, timeout_s: float) -> bool:
        """Block until an outbox insert is NOTIFYed or the timeout; True if notified."""
        return self.store.wait_for_insert(timeout_s)

    def close(self) -> None:
        self.publisher.close()
        self.store.close()
