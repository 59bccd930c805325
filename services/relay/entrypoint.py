"""The relay process loop: run a step, wait for work, back off on failures.

What one step does (lease, claim, publish, mark, housekeeping) lives in
`usecases`; this module only decides when to run the next one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from services.core.backoff import Backoff, Outage
from services.core.logs import get_logger
from services.relay.domain import should_wait_for_notify
from services.relay.errors import RelayError, StoreUnavailable
from services.relay.metrics import RelayMetrics
from services.relay.settings import RelaySettings
from services.relay.usecases import RelayUseCases

log = get_logger(__name__)


@dataclass
class Relay:
    """Publishes the outbox; build one with `services.relay.bootstrap.build_relay`."""

    settings: RelaySettings
    usecases: RelayUseCases
    metrics: RelayMetrics

    def __post_init__(self) -> None:
        backoff = Backoff(
            base_s=self.settings.backoff_initial_s,
            cap_s=self.settings.backoff_max_s,
            jitter="none",
        )
        # Each says once when it is lost and once when it is back.
        self._database = Outage("PostgreSQL", log=log, backoff=backoff)
        self._kafka = Outage("Kafka (did not acknowledge)", log=log, backoff=backoff)

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
            len(self.usecases.wanted),
            self.settings.slot_count,
        )
        while not stop.is_set():
            try:
                claimed = self.usecases.step()
            except RelayError as exc:
                stop.wait(self._failed(exc))
                continue
            self._database.succeeded()
            self._kafka.succeeded()
            if claimed:
                last_activity = time.monotonic()
            elif until_idle_s is not None and time.monotonic() - last_activity >= until_idle_s:
                return
            if should_wait_for_notify(claimed, batch_size=self.settings.batch_size):
                self._wait()

    def _wait(self) -> None:
        try:
            self.usecases.wait_for_insert(self.settings.poll_interval_s)
        except StoreUnavailable as exc:
            self._failed(exc)  # the next step reconnects

    def _failed(self, exc: RelayError) -> float:
        """The wait before the next step; the outage is logged when it starts and ends."""
        if isinstance(exc, StoreUnavailable):
            self.metrics.database_available = False
            return self._database.failed(exc)
        self._database.succeeded()  # the batch was claimed: PostgreSQL answered
        self.metrics.kafka_available = False
        return self._kafka.failed(exc)

    def close(self) -> None:
        self.usecases.close()
