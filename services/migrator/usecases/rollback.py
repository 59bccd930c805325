"""Rollback within the grace period, and the cleanup of old meetings after it.

Rollback (`switch.rollback_requested`; the gateway has already swapped the
previous connection back in and recorded the request, and reading the switch
sets it `ROLLING_BACK`, `PlanStore.switch`): cancel the
rows not yet moved, put every migrated session back on its previous meeting
(no meeting is created), delete the meetings the switch made at the new
provider, then mark the switch `ROLLED_BACK` with its `switch.rolled_back`.
Every step is idempotent, so a redelivered request, or the periodic resume
after a crash, finishes the job.

Cleanup (periodic): every meeting relink made ends as a session's current
meeting or deleted. Each run deletes the meetings rows made that no session
uses (skipped, rolled back, superseded; looked up when never recorded), and,
once a settled switch's rollback deadline has passed, its sessions' previous
meetings at the old provider. A deletion the provider refuses is tried again
at the next run; tokens are kept until nothing is owed at their provider.

Cancellation (`session.cancelled`, the platform's API): the cancelled
session's meetings -- its current one, and the previous one a switch kept for
its rollback -- are owed a deletion at once (a cancelled session is never
restored). The agent hands the session to a task of its own (a slow provider
never holds the partition); every cleanup run finds what is still owed in
PostgreSQL, so a failed deletion, or one a crash interrupted, is tried again,
each meeting backing off (doubling, capped) while its provider refuses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from services.core.backoff import Backoff
from services.core.db.models import SwitchState
from services.core.logs import get_logger
from services.core.tracking import Delivery
from services.migrator.adapters.db.rollback import (
    CancelledMeeting,
    MeetingToDelete,
    RollbackStore,
    UnusedMeeting,
)
from services.migrator.domain import SwitchRef
from services.migrator.errors import UnknownSwitchError
from services.migrator.usecases.connections import ConnectionCache
from services.providers import AuthorizedSession, MeetingRequest, ProviderError

log = get_logger(__name__)

# A meeting owed a deletion, grouped by its tutor and provider (`_per_account`).
Owed = TypeVar("Owed", CancelledMeeting, UnusedMeeting)


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
    # A cancelled session's meeting its provider refused to delete waits this
    # long (doubling per failure) before the next try; kept per meeting.
    cancelled_backoff: Backoff = field(
        default_factory=lambda: Backoff(base_s=1.0, cap_s=300.0, jitter="equal")
    )
    clock: Callable[[], float] = time.monotonic
    _cancelled_waits: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    _cancelled_tasks: set[asyncio.Task[int]] = field(default_factory=set)

    async def rollback(self, switch_id: str, *, delivery: Delivery | None = None) -> None:
        """Carry out (or finish) the rollback of one switch.

        `delivery` (the request as consumed) is recorded as handled in the
        transaction that finishes the rollback, or on its own when there is
        nothing to do; the resume timer passes none.
        """
        switch = await self.store.switch(switch_id)
        if switch is None:
            raise UnknownSwitchError(f"switch {switch_id} is not in switch_requests")
        ids = {"switch_id": switch.id, "tutor_id": switch.tutor_id}
        if switch.state != SwitchState.ROLLING_BACK:
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

    async def cancelled(self, session_id: str, *, delivery: Delivery | None = None) -> None:
        """A session was cancelled: record the event, then delete its meetings in a task.

        The tracking record comes first: what the task does not finish (a
        provider down, a crash) is still owed in PostgreSQL, and the cleanup
        run tries it again.
        """
        if delivery is not None:
            await self.store.plans.track(delivery)
        task = asyncio.get_running_loop().create_task(self.delete_cancelled(session_id=session_id))
        self._cancelled_tasks.add(task)
        task.add_done_callback(self._cancelled_done)

    def _cancelled_done(self, task: asyncio.Task[int]) -> None:
        self._cancelled_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "deleting a cancelled session's meetings failed (tried again later): %s",
                task.exception(),
            )

    async def _per_account(
        self,
        meetings: Sequence[Owed],
        delete: Callable[..., Awaitable[bool]],
        *,
        what: str,
    ) -> AsyncIterator[tuple[list[Owed], list[bool] | None]]:
        """Delete meetings per tutor and provider, each group on the tokens for it.

        `delete(session, meeting, gate=...)` for each, at most `delete_concurrency`
        at once per group; each group's answers are yielded as soon as it is done
        (a group with no tokens is logged and answered None).
        """
        groups: dict[tuple[str, str], list[Owed]] = {}
        for meeting in meetings:
            groups.setdefault((meeting.tutor_id, meeting.provider), []).append(meeting)
        for (tutor_id, provider), owed in groups.items():
            session = await self.connections.session_at(tutor_id, provider)
            if session is None:
                log.warning(
                    f"{what} left at the provider: no tokens to delete them",
                    extra={"tutor_id": tutor_id, "provider": provider},
                )
                yield owed, None
                continue
            gate = asyncio.Semaphore(self.delete_concurrency)
            results = await asyncio.gather(*(delete(session, m, gate=gate) for m in owed))
            yield owed, list(results)

    async def delete_cancelled(self, *, session_id: str | None = None) -> int:
        """Delete the meetings cancelled sessions still have (of one session, or all); how many.

        Each with the tutor's tokens for its provider (current, or kept from
        the switch). A meeting already gone (404) counts as deleted; one the
        provider refused stays owed and backs off.
        """
        gone = 0
        now = self.clock()
        meetings = [
            m
            for m in await self.store.cancelled_meetings(
                session_id=session_id, limit=self.batch_size
            )
            if self._cancelled_waits.get((m.provider, m.meeting_external_id), (0, 0.0))[1] <= now
        ]
        async for owed, results in self._per_account(
            meetings, self._delete_cancelled, what="cancelled sessions' meetings"
        ):
            if results is None:  # no tokens: back off like a refused deletion
                for meeting in owed:
                    self._cancelled_failed(meeting)
                continue
            gone += sum(results)
        return gone

    async def _delete_cancelled(
        self, session: AuthorizedSession, meeting: CancelledMeeting, *, gate: asyncio.Semaphore
    ) -> bool:
        ids = {"session_id": meeting.session_id, "provider": meeting.provider}
        async with gate:
            try:
                # False (already gone, a 404) is as good as deleted.
                await session.delete_meeting(meeting.meeting_external_id)
            except ProviderError as exc:
                delay = self._cancelled_failed(meeting)
                log.warning(
                    "could not delete a cancelled session's meeting (tried again in %.0fs): %s",
                    delay,
                    exc,
                    extra=ids,
                )
                return False
        await self.store.cancelled_meeting_deleted(meeting)
        self._cancelled_waits.pop((meeting.provider, meeting.meeting_external_id), None)
        log.info("cancelled session's meeting deleted", extra=ids)
        return True

    def _cancelled_failed(self, meeting: CancelledMeeting) -> float:
        key = (meeting.provider, meeting.meeting_external_id)
        failures = self._cancelled_waits.get(key, (0, 0.0))[0] + 1
        delay = self.cancelled_backoff.delay_s(failures)
        self._cancelled_waits[key] = (failures, self.clock() + delay)
        return delay

    async def resume(self) -> int:
        """Finish rollbacks a crash (or an early offset commit) left `ROLLING_BACK`."""
        pending = await self.store.rolling_back()
        for switch_id in pending:
            await self.rollback(switch_id)
        return len(pending)

    async def cleanup(self) -> int:
        """Delete what relink made and nobody uses; return switches whose grace period is done.

        Every run, whatever failed before is tried again: the meetings rows
        made that no session uses (skipped, rolled back, superseded), then the
        old meetings of switches past their grace period; a switch is done
        only when none of its old meetings is still owed. Kept tokens are
        forgotten once nothing is owed at their provider.
        """
        await self.delete_cancelled()
        stranded = await self.store.settle_stranded()
        if stranded:
            log.info("settled %d rows of superseded switches left unsettled", stranded)
        await self.delete_unused()
        done = 0
        for switch in await self.store.switches_to_clean(limit=50):
            ids = {"switch_id": switch.id, "tutor_id": switch.tutor_id}
            deleted, reachable = await self._delete_all_counted(
                switch,
                provider=switch.from_provider,
                batch=partial(self.store.old_meetings_to_delete, switch, limit=self.batch_size),
                mark=self.store.mark_old_meetings_deleted,
            )
            if await self.store.finish_cleanup(switch, give_up=not reachable):
                done += 1
                log.info("grace period over: %d old meetings deleted", deleted, extra=ids)
            elif deleted:
                log.info(
                    "grace period over: %d old meetings deleted, more later", deleted, extra=ids
                )
        await self.store.release_tokens()
        return done

    async def delete_unused(self) -> int:
        """Delete the meetings rows made that no session uses; return how many are gone.

        Per tutor and provider, with the tokens for it (current or kept). A
        row whose meeting was never recorded (a create in flight when its
        process died or its row was skipped) has it looked up first. One that
        fails stays owed and is tried at the next run.
        """
        gone, after = 0, 0
        while meetings := await self.store.unused_meetings(after_id=after, limit=self.batch_size):
            after = meetings[-1].row_id
            async for owed, results in self._per_account(
                meetings, self._delete_unused, what="unused meetings"
            ):
                if results is None:
                    continue
                done = [m.row_id for m, ok in zip(owed, results, strict=True) if ok]
                await self.store.mark_new_meetings_deleted(done)
                gone += len(done)
        return gone

    async def _delete_unused(
        self, session: AuthorizedSession, meeting: UnusedMeeting, *, gate: asyncio.Semaphore
    ) -> bool:
        ids = {"switch_id": meeting.switch_id, "session_id": meeting.session_id}
        async with gate:
            try:
                if meeting.meeting_external_id is not None:
                    await session.delete_meeting(meeting.meeting_external_id)
                    return True
                # A create whose answer was lost: find what it made (up to a few
                # duplicates), record it on the row, then delete it.
                for _ in range(3):
                    found = await session.find_meeting(
                        MeetingRequest(
                            switch_id=meeting.switch_id,
                            session_id=meeting.session_id,
                            topic=meeting.topic,
                            start_time=meeting.scheduled_start_at,
                            duration_min=meeting.duration_minutes,
                            timezone=meeting.timezone,
                        )
                    )
                    if found is None:
                        return True
                    if not await self.store.record_found(meeting.row_id, found.external_id):
                        # A session holds it after all: never delete it, and
                        # nothing else is owed for this row.
                        log.info("found meeting kept: in use", extra=ids)
                        return True
                    log.info(
                        "unrecorded meeting found; deleting it",
                        extra={**ids, "meeting_id": found.external_id},
                    )
                    await session.delete_meeting(found.external_id)
                return True
            except ProviderError as exc:
                log.warning(
                    "could not delete an unused meeting (tried again later): %s", exc, extra=ids
                )
                return False

    async def _delete_all(
        self,
        switch: SwitchRef,
        *,
        provider: str,
        batch: Callable[..., Awaitable[list[MeetingToDelete]]],
        mark: Callable[[Sequence[int]], Awaitable[None]],
    ) -> int:
        return (await self._delete_all_counted(switch, provider=provider, batch=batch, mark=mark))[
            0
        ]

    async def _delete_all_counted(
        self,
        switch: SwitchRef,
        *,
        provider: str,
        batch: Callable[..., Awaitable[list[MeetingToDelete]]],
        mark: Callable[[Sequence[int]], Awaitable[None]],
    ) -> tuple[int, bool]:
        """Delete each meeting `batch` lists, recording those gone; (count, tokens were there).

        A meeting the provider refused to delete stays listed for the next run.
        """
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
                return deleted, False
            gate = asyncio.Semaphore(self.delete_concurrency)
            results = await asyncio.gather(
                *(self._delete(session, meeting, gate=gate, ids=ids) for meeting in meetings)
            )
            gone = [m.row_id for m, ok in zip(meetings, results, strict=True) if ok]
            await mark(gone)
            deleted += len(gone)
        return deleted, True

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
