"""The relay loop: lease slots, claim a batch, publish it, mark it, repeat.

Batches run one after another: batch N+1 is claimed only after batch N is
acknowledged and marked, and each batch is produced in id order through one
idempotent producer, so a tutor's events reach their partition in the order
their rows were written.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.core.backoff import Backoff
from services.core.logs import get_logger
from services.relay import PublishFailed, RelayError, StoreUnavailable
from services.relay.batching import settle, should_wait_for_notify
from services.relay.metrics import RelayMetrics
from services.relay.ownership import owns_everything, wanted_slots
from services.relay.publisher import KafkaPublisher
from services.relay.settings import RelaySettings
from services.relay.store import OutboxStore

log = get_logger(__name__)

# Exit status of the fault-injection hook, distinct from crashes and signals.
CRASH_EXIT_CODE = 86
LEASE_RETRY_S = 2.0


@dataclass
class Relay:
    """Publishes the outbox; build one with `services.relay.bootstrap.build_relay`."""

    settings: RelaySettings
    store: OutboxStore
    publisher: KafkaPublisher
    metrics: RelayMetrics
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._wanted = wanted_slots(
            instance=self.settings.instance,
            instances=self.settings.instances,
            slot_count=self.settings.slot_count,
        )
        self._failures = 0
        self._backoff = Backoff(
            base_s=self.settings.backoff_initial_s,
            cap_s=self.settings.backoff_max_s,
            jitter="none",
        )
        self._next_lease_at = 0.0
        self._next_metrics_at = 0.0
        self._next_cleanup_at = 0.0

    def run(
        self, *, stop: threading.Event | None = None, until_idle_s: float | None = None
    ) -> None:
        """Publish until `stop` is set (or, with `until_idle_s`, nothing was left that long)."""
        stop = stop or threading.Event()
        last_activity = time.monotonic()
        log.info(
            "relay %d of %d starting (%d of %d slots wanted)",
            self.settings.instance,
            self.settings.instances,
            len(self._wanted),
            self.settings.slot_count,
        )
        while not stop.is_set():
            try:
                claimed = self.step()
            except RelayError as exc:
                self._failures += 1
                delay = self._backoff.delay_s(self._failures)
                self._report_failure(exc, delay)
                stop.wait(delay)
                continue
            if self._failures:
                log.info("relay recovered after %d failed attempt(s)", self._failures)
                self._failures = 0
            if claimed:
                last_activity = time.monotonic()
            elif until_idle_s is not None and time.monotonic() - last_activity >= until_idle_s:
                return
            if should_wait_for_notify(claimed, batch_size=self.settings.batch_size):
                self._wait(stop)

    def step(self) -> int:
        """Connect if needed, then publish one batch; return how many rows it claimed."""
        self.store.connect()
        self.metrics.database_available = True
        held = self._lease()
        self._housekeeping()
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

    def _lease(self) -> set[int]:
        held = self.store.held_slots
        if len(held) < len(self._wanted) and self.clock() >= self._next_lease_at:
            held = self.store.lease_slots(self._wanted)
            self._next_lease_at = self.clock() + LEASE_RETRY_S
            if len(held) < len(self._wanted):
                log.info(
                    "holding %d of %d wanted slots; another relay has the rest",
                    len(held),
                    len(self._wanted),
                )
        self.metrics.slots_held = len(held)
        return set(held)

    def _housekeeping(self) -> None:
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

    def _wait(self, stop: threading.Event) -> None:
        try:
            self.store.wait_for_insert(self.settings.poll_interval_s)
        except StoreUnavailable as exc:
            log.warning("lost PostgreSQL while waiting: %s", exc)

    def _report_failure(self, exc: RelayError, delay: float) -> None:
        if isinstance(exc, StoreUnavailable):
            self.metrics.database_available = False
            what = "PostgreSQL unavailable"
        else:
            self.metrics.kafka_available = False
            what = "Kafka did not acknowledge"
        log.warning("%s (attempt %d, retrying in %.1fs): %s", what, self._failures, delay, exc)

    def close(self) -> None:
        self.publisher.close()
        self.store.close()
