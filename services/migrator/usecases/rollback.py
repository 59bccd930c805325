"""Rollback within the grace period, and the cleanup of old meetings after it.

Rollback (`switch.rollback_requested`; the gateway has already swapped the
previous connection back in and set the switch `ROLLING_BACK`): cancel the
rows not yet moved, put every migrated session back on its previous meeting
(no meeting is created), delete the meetings the switch made at the new
provider, then mark the switch `ROLLED_BACK` with its `switch.rolled_back`.
Every step is idempotent, so a redelivered request, or the periodic resume
after a crash, finishes the job.

Cleanup (periodic): once a settled switch's rollback deadline has passed,
delete its sessions' previous meetings at the old provider and forget the
old tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from services.core.logs import get_logger
from services.core.tracking import Delivery
from services.migrator.adapters.db.rollback import MeetingToDelete, RollbackStore
from services.migrator.domain import SwitchRef
from services.migrator.errors import UnknownSwitchError
from services.migrator.usecases.connections import ConnectionCache
from services.providers import AuthorizedSession, ProviderError

log = get_logger(__name__)


@dataclass
class RollbackService:
    """Rolls switches back and cleans up old meetings; `delete_concurrency` calls at a time."""

    store: RollbackStore
    connections: ConnectionCache
    batch_size: int = 200
    delete_concurrency: int = 10
    # Switches this process is rolling back now: the agent and the resume timer
    # never work on the same one at once (other processes are kept apart by SQL).
    _running: set[str] = field(default_factory=set)

    async def rollback(self, switch_id: str, *, delivery: Delivery | None = None) -> None:
        """Carry out (or finish) the rollback of one switch.

        `delivery` (the request as consumed) is recorded as handled in the
        transaction that finishes the rollback, or on its own when there is
        nothing to do; the resume timer passes none.
        """
        switch = await self.store.switch(switch_id)
        if switch is None:
            raise UnknownSwitchError(f"switch {switch_id} is not in provider_switches")
        ids = {"switch_id": switch.id, "tutor_id": switch.tutor_id}
        if switch.state != "ROLLING_BACK":
            log.info("rollback request: switch is %s; nothing to do", switch.state, extra=ids)
            if delivery is not None:
                await self.store.plans.track(delivery)
            return
        if switch.id in self._running:
            return
        self._running.add(switch.id)
        try:
            await self._rollback(switch, ids=ids, delivery=delivery)
        finally:
            self._running.discard(switch.id)

    async def _rollback(
        self, switch: SwitchRef, *, ids: dict[str, str], delivery: Delivery | None
    ) -> None:
        cancelled = await self.store.cancel_unsettled(switch.id)
        restored = 0
        while True:
            moved, seen = await self.store.restore_batch(switch, limit=self.batch_size)
            restored += moved
            if seen == 0:
                break
        log.info("rollback: %d sessions restored, %d cancelled", restored, cancelled, extra=ids)
        deleted = await self._delete_all(
            switch,
            provider=switch.to_provider,
            batch=partial(self.store.new_meetings_to_delete, switch.id, limit=self.batch_size),
            mark=self.store.mark_new_meetings_deleted,
        )
        outcome = await self.store.finish_rollback(switch, delivery=delivery)
        if outcome is None:
            log.info("rollback not finished yet (another run holds rows)", extra=ids)
            return
        log.info(
            "switch rolled back: %d restored, %d not restorable, %d new meetings deleted",
            outcome.sessions_restored,
            outcome.sessions_failed,
            deleted,
            extra=ids,
        )

    async def resume(self) -> int:
        """Finish rollbacks a crash (or an early offset commit) left `ROLLING_BACK`."""
        pending = await self.store.rolling_back()
        for switch_id in pending:
            await self.rollback(switch_id)
        return len(pending)

    async def cleanup(self) -> int:
        """Delete the old meetings of switches past their grace period; return switches done."""
        done = 0
        for switch in await self.store.switches_to_clean(limit=50):
            ids = {"switch_id": switch.id, "tutor_id": switch.tutor_id}
            deleted = await self._delete_all(
                switch,
                provider=switch.from_provider,
                batch=partial(self.store.old_meetings_to_delete, switch, limit=self.batch_size),
                mark=self.store.mark_old_meetings_deleted,
            )
            if await self.store.finish_cleanup(switch):
                done += 1
                log.info("grace period over: %d old meetings deleted", deleted, extra=ids)
        return done

    async def _delete_all(
        self,
        switch: SwitchRef,
        *,
        provider: str,
        batch: Callable[..., Awaitable[list[MeetingToDelete]]],
        mark: Callable[[Sequence[int]], Awaitable[None]],
    ) -> int:
        """Delete each meeting `batch` lists (best effort), recording those gone; return count."""
        ids = {"switch_id": switch.id, "provider": provider}
        session: AuthorizedSession | None = None
        after, deleted = 0, 0
        while meetings := await batch(after_id=after):
            after = meetings[-1].row_id
            session = session or await self.connections.session_at(switch.tutor_id, provider)
            if session is None:
                log.warning(
                    "meetings left at the provider: no connection kept to delete them", extra=ids
                )
                return deleted
            gate = asyncio.Semaphore(self.delete_concurrency)
            results = await asyncio.gather(
                *(self._delete(session, meeting, gate=gate, ids=ids) for meeting in meetings)
            )
            gone = [m.row_id for m, ok in zip(meetings, results, strict=True) if ok]
            await mark(gone)
            deleted += len(gone)
        return deleted

    async def _delete(
        self,
        session: AuthorizedSession,
        meeting: MeetingToDelete,
        *,
        gate: asyncio.Semaphore,
        ids: dict[str, str],
    ) -> bool:
        async with gate:
            try:
                # False (already gone, a 404) is as good as deleted.
                await session.delete_meeting(meeting.meeting_external_id)
            except ProviderError as exc:
                log.warning(
                    "could not delete meeting: %s",
                    exc,
                    extra={**ids, "session_id": meeting.session_id},
                )
                return False
        return True
