"""What the migrator does with each event on the `provider.switched` topic.

The agent calls `handle(event, delivery)`; the work itself is recorded in
PostgreSQL (the plan) and carried out by the executor, so the Kafka offset may
advance as soon as `handle` returns, whatever Faust does with commits.

Redelivery: the last transaction of each handler writes the event's
tracking record (`core.tracking`), and `handle` first looks for it, so an
event handled already (produced twice, or re-read after a crash before the
offset commit) plans, retries or rolls back nothing a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from services.core.events import Event, EventType
from services.core.logs import get_logger
from services.core.tracking import Delivery
from services.migrator.adapters.db.plan import PlanStore
from services.migrator.adapters.db.token_slots import TokenSlots
from services.migrator.domain import DROPPED_SWITCH_STATES, SwitchRef, is_superseded
from services.migrator.errors import UnknownSwitchError
from services.migrator.usecases.rollback import RollbackService

log = get_logger(__name__)


@dataclass
class MigrationService:
    """Plans switches, queues retries, hands rollbacks on; `wake` says rows are due."""

    plans: PlanStore
    tokens: TokenSlots
    plan_batch_size: int
    wake: Callable[[], None] = field(default=lambda: None)
    rollbacks: RollbackService | None = None

    async def handle(self, event: Event, delivery: Delivery | None = None) -> None:
        """Dispatch one parsed event by its type; one handled already does nothing."""
        handled_here = (
            EventType.PROVIDER_SWITCHED,
            EventType.SESSION_RETRY_REQUESTED,
            EventType.SWITCH_ROLLBACK_REQUESTED,
            EventType.SESSION_CANCELLED,
        )
        if event.type not in handled_here or (
            event.type in (EventType.SWITCH_ROLLBACK_REQUESTED, EventType.SESSION_CANCELLED)
            and self.rollbacks is None
        ):
            # Our own switch.rolled_back, .settled, .delayed share the topic (ordered per tutor).
            log.info("ignored event type %s", event.type, extra={"event_id": event.id})
            return
        if delivery is not None and await self.plans.handled(delivery):
            log.info(
                "%s %s handled already (redelivered); nothing to do",
                event.type,
                event.id,
                extra={"switch_id": event.data.get("switch_id")},
            )
            return
        if event.type == EventType.PROVIDER_SWITCHED:
            await self.switched(event.data["switch_id"], delivery=delivery)
        elif event.type == EventType.SESSION_RETRY_REQUESTED:
            await self.retry_requested(
                event.data["switch_id"], event.data["session_ids"], delivery=delivery
            )
        elif event.type == EventType.SESSION_CANCELLED and self.rollbacks is not None:
            await self.rollbacks.cancelled(event.data["session_id"], delivery=delivery)
        elif self.rollbacks is not None:
            await self.rollbacks.rollback(event.data["switch_id"], delivery=delivery)

    async def switched(self, switch_id: str, *, delivery: Delivery | None = None) -> None:
        """Drop a superseded switch, else record its plan (idempotently) and let it run."""
        switch = await self.plans.switch(switch_id)
        if switch is None:
            raise UnknownSwitchError(f"switch {switch_id} is not in switch_requests")
        ids = {"switch_id": switch.id, "tutor_id": switch.tutor_id}
        if switch.state in DROPPED_SWITCH_STATES:
            log.info("switch %s: nothing to do", switch.state.lower(), extra=ids)
            if delivery is not None:
                await self.plans.track(delivery)
            return
        connection = await self.tokens.connection(switch.tutor_id)
        if is_superseded(
            switch,
            connection_provider=connection.provider if connection else None,
            connection_generation=connection.generation if connection else None,
        ):
            await self.plans.mark_superseded(
                tutor_id=switch.tutor_id,
                below_generation=switch.generation + 1,
                delivery=delivery,
            )
            log.info("switch superseded by a newer one; dropped", extra=ids)
            return
        superseded = await self.plans.mark_superseded(
            tutor_id=switch.tutor_id, below_generation=switch.generation
        )
        if superseded:
            log.info("older switches superseded: %s", ", ".join(superseded), extra=ids)
        await self.plan(switch, delivery=delivery)

    async def plan(self, switch: SwitchRef, *, delivery: Delivery | None = None) -> int:
        """Record one row per eligible session, in batches, soonest first; return rows added.

        The plan's last transaction records `delivery` as handled (none for the sweep).
        """
        ids = {"switch_id": switch.id, "tutor_id": switch.tutor_id}
        await self.plans.start_planning(switch.id)
        cursor = None
        added = 0
        while True:
            batch = await self.plans.plan_batch(switch, cursor=cursor, limit=self.plan_batch_size)
            added += batch.inserted
            if batch.inserted:
                self.wake()
            cursor = batch.cursor
            if batch.seen < self.plan_batch_size:
                break
        await self.plans.finish_planning(switch.id, delivery=delivery)
        self.wake()
        log.info("plan recorded: %d new rows", added, extra=ids)
        return added

    async def catch_up(self, *, older_than: timedelta, window: timedelta) -> int:
        """Handle, from the database, the switches whose `provider.switched` never came.

        A switch the gateway made stays PENDING until its event is handled. One
        still PENDING long after (the broker was down, the event was lost or
        skipped on its way) is handled as its event would be: superseded or
        planned. The event, when it comes later, then finds the plan made.
        Requests older than `window` (the sweep's) are not looked at.
        """
        switches = await self.plans.unhandled_switches(older_than=older_than, window=window)
        for switch in switches:
            log.warning(
                "switch %s is still PENDING %.0fs after it was made: its provider.switched "
                "was not handled; handling it from the database",
                switch.id,
                older_than.total_seconds(),
                extra={"switch_id": switch.id, "tutor_id": switch.tutor_id},
            )
            await self.switched(switch.id)
        return len(switches)

    async def retry_requested(
        self, switch_id: str, session_ids: list[str], *, delivery: Delivery | None = None
    ) -> None:
        count = await self.plans.request_retry(
            switch_id=switch_id, session_ids=session_ids, delivery=delivery
        )
        log.info("retry requested: %d sessions queued", count, extra={"switch_id": switch_id})
        if count:
            self.wake()

    async def auto_retry(self, *, max_retries: int, after: timedelta) -> int:
        """Queue retryable failures again without being asked; return rows queued."""
        queued = await self.plans.auto_retry(max_retries=max_retries, after=after)
        if queued:
            self.wake()
        return queued

    async def sweep(self, *, window_s: float) -> int:
        """Plan again every current switch: catches sessions booked while it committed."""
        added = 0
        for switch in await self.plans.sweepable_switches(window=timedelta(seconds=window_s)):
            added += await self.plan(switch)
        return added
