"""The bounded executor: claims due rows and moves each session to its new meeting.

It runs as a task inside the Faust app. Concurrency is bounded overall
(`concurrency`) and per tutor (`tutor_concurrency`); a row's failure is
decided on by `domain.decide` and never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.core import metrics, tracing
from services.core.backoff import Outage
from services.core.db.errors import StoreError
from services.core.logs import get_logger
from services.core.tokens import TokenDecryptError, UnknownTokenKeyError
from services.migrator.adapters.db.claim import ClaimedRow, ClaimStore
from services.migrator.adapters.db.group_commit import GroupCommit
from services.migrator.adapters.db.outcome import OutcomeStore
from services.migrator.domain import (
    ELIGIBLE_STATUSES,
    Failure,
    FailureKind,
    GiveUp,
    RetryLater,
    RowRetry,
    decide,
    usage_limit_error,
    usage_streak,
)
from services.migrator.usecases.connections import ConnectionCache
from services.providers import (
    AuthorizationRevokedError,
    AuthorizedSession,
    DailyQuotaExhaustedError,
    HeldBackError,
    InvalidRequestError,
    Meeting,
    MeetingRequest,
    NoJoinLinkError,
    ProviderError,
    RateLimitedError,
    RetryableProviderError,
    TokenExpiredError,
    UsageLimitedError,
)

log = get_logger(__name__)


def failure_of(exc: ProviderError, *, streak: int = 0) -> Failure:
    """Translate a provider error into the migrator's words (messages carry no token).

    `streak`: the usage-limit refusals in a row before this one (the row's `last_error`).
    """
    detail = str(exc)[:500]
    if isinstance(exc, UsageLimitedError):
        return Failure(FailureKind.USAGE_LIMITED, detail, streak=streak)
    if isinstance(exc, NoJoinLinkError):
        return Failure(FailureKind.NO_JOIN_LINK, detail)
    if isinstance(exc, DailyQuotaExhaustedError):
        return Failure(FailureKind.QUOTA_EXCEEDED, detail, resets_at=exc.resets_at)
    if isinstance(exc, RateLimitedError):
        return Failure(FailureKind.RATE_LIMITED, detail, wait_s=exc.retry_after_s)
    if isinstance(exc, AuthorizationRevokedError | TokenExpiredError):
        # A token still refused after one refresh: only reconnecting helps.
        return Failure(FailureKind.RECONNECT_REQUIRED, detail)
    if isinstance(exc, RetryableProviderError):
        return Failure(FailureKind.TRANSIENT, detail)
    if isinstance(exc, InvalidRequestError):
        return Failure(FailureKind.REJECTED, detail)
    return Failure(FailureKind.TRANSIENT, detail)


def unreadable_tokens(exc: TokenDecryptError, *, provider: str) -> Failure:
    """Stored tokens this process cannot decrypt, in the migrator's words (no provider call).

    A key id this process is not configured with is the deployment's fault,
    not the tutor's: a configuration error that names the key (retried like a
    transient failure: another instance may hold the key). Any other
    ciphertext that does not decrypt (bound to another row, or corrupt) will
    never decrypt: only new tokens help, so the tutor must reconnect.
    """
    if isinstance(exc, UnknownTokenKeyError):
        return Failure(
            FailureKind.CONFIGURATION,
            f"the stored tokens were sealed with token key id {exc.key_id!r}, which this "
            "migrator's RELINK_TOKEN_KEYS does not hold; deploy that key",
        )
    return Failure(
        FailureKind.RECONNECT_REQUIRED,
        f"the stored {provider} tokens do not decrypt for this tutor (wrong row or corrupt); "
        "reconnect the account",
    )


@dataclass
class SwitchTally:
    """What this process did at the providers for one switch, for its summary line."""

    calls: int = 0  # meeting creates and look-ups sent
    errors: int = 0  # of them answered with an error
    waits: int = 0  # rows held back by a Retry-After, a rate limit or the daily quota

    def line(self, settled: dict[str, Any]) -> str:
        return (
            f"{settled['sessions_migrated']} of {settled['sessions_total']} session(s) moved, "
            f"{settled['sessions_failed']} failed, {settled['sessions_skipped']} skipped; "
            f"this process: {self.calls} provider call(s), {self.errors} error(s), "
            f"{self.waits} wait(s)"
        )


# Summaries of switches that settled elsewhere are dropped past this many.
MAX_TALLIES = 10_000


async def _known_trace(switch_id: str) -> Mapping[str, str]:
    return tracing.SWITCHES.get(switch_id) or {}


class Executor:
    """Claims due rows and migrates them, `concurrency` at a time, `tutor_concurrency` per tutor."""

    def __init__(
        self,
        *,
        claims: ClaimStore,
        outcomes: OutcomeStore,
        connections: ConnectionCache,
        policy: RowRetry,
        concurrency: int,
        tutor_concurrency: int,
        poll_interval_s: float,
        lease: timedelta,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        switch_trace: Callable[[str], Awaitable[Mapping[str, str]]] | None = None,
    ) -> None:
        self.claims = claims
        # Each switch's trace context (core.tracing): the one its rows' spans and events continue.
        self.switch_trace = switch_trace or _known_trace
        self.outcomes = outcomes
        self.connections = connections
        self.policy = policy
        self.concurrency = concurrency
        self.tutor_concurrency = tutor_concurrency
        self.poll_interval_s = poll_interval_s
        self.lease = lease
        self.now = now
        # Rows claimed and not yet answered by the provider, per tutor (the
        # per-tutor bound: what the provider's per-user rate limit sees) ...
        self.claimed: Counter[str] = Counter()
        # ... of which these wait to start, and this many are at the provider.
        self.ready: deque[ClaimedRow] = deque()
        self.active = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self.database = Outage("PostgreSQL (claims)", log=log)
        self.settled = 0
        self.settling = 0
        # Switches told by their provider to wait (429 Retry-After, daily quota):
        # when the pause was learnt (monotonic) and until when. PostgreSQL has
        # the wait for every later claim; this is for rows claimed before it.
        self.pauses: dict[str, tuple[float, datetime]] = {}
        # When the claim that took each unfinished row started (monotonic).
        self.claimed_at: dict[int, float] = {}
        # Per switch, what this process did at the providers (logged when it settles).
        self.tallies: dict[str, SwitchTally] = {}
        self.claim_min = max(1, concurrency // 10)
        self.claim_gather_s = 0.01
        # The two writes that end every migrated session run in group commits:
        # rows finishing together share one statement and one transaction.
        self.recording: GroupCommit[tuple[ClaimedRow, Meeting], bool] = GroupCommit(
            outcomes.record_meetings, name="record meetings", key=lambda done: done[0].id
        )
        self.completing: GroupCommit[tuple[ClaimedRow, Meeting], bool] = GroupCommit(
            outcomes.complete_migrations,
            name="complete migrations",
            key=lambda done: done[0].session_id,
        )

    def wake(self) -> None:
        """New work may be due (a plan batch was recorded, a row finished)."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and work until stopped."""
        while not self._stopping:
            claimed = 0
            # Cleared before the claim, never after: a wake-up that arrives while
            # the claim runs (a plan batch committing meanwhile) starts the next
            # one at once instead of waiting out the poll interval.
            self._wake.clear()
            try:
                claimed = await self.claim_once()
                self.database.succeeded()
            except StoreError as exc:
                # Away: wait (backing off) instead of a traceback every poll.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.database.failed(exc))
                continue
            except Exception:
                log.exception("claim failed; trying again")
            if claimed == 0 or self._wanted() <= 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
            if 0 < self._wanted() < self.claim_min:
                # Rows finish one at a time and each wakes us: claiming per
                # finished row costs two queries a row. Let a few slots free
                # up; the rows claimed ahead keep the provider busy meanwhile.
                await asyncio.sleep(self.claim_gather_s)

    def free_slots(self) -> int:
        """Rows that may start at the provider now.

        `concurrency` bounds the rows at the provider (started, not yet
        answered): that is what the provider sees and what the bound
        concurrency / latency means. A row whose meeting is made gives its
        slot back while it is written down, so the provider is never kept
        waiting on PostgreSQL; up to another `concurrency` rows may be in that
        stage before new rows wait, so a slow database cannot pile them up.
        """
        behind = max(0, self.settling - self.concurrency)
        return self.concurrency - self.active - behind

    def _wanted(self) -> int:
        """Rows to claim now: the free slots plus a few claimed ahead (2 x claim_min).

        A slot that frees starts a row claimed ahead at once, instead of
        waiting for the next claim's round trips. Measured (500 tutors, 100 ms,
        concurrency 50): none ahead 352/s, claim_min ahead 394/s, twice that 414-428/s.
        """
        return self.free_slots() + 2 * self.claim_min - len(self.ready)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        await self._hand_back()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self._hand_back()  # a claim that was under way when we stopped

    async def _hand_back(self) -> None:
        """Rows claimed ahead and never started are due again now, not after their lease."""
        unstarted, self.ready = list(self.ready), deque()
        for row in unstarted:
            with contextlib.suppress(Exception):
                await self.outcomes.retry_later(
                    row, at=self.now(), error="not started (stopping)", counts_as_attempt=False
                )
            self._unclaim(row.tutor_id)
            self.claimed_at.pop(row.id, None)

    async def claim_once(self) -> int:
        wanted = self._wanted()
        if wanted <= 0:
            return 0
        started = time.monotonic()
        if self.pauses:
            # A pause matters only to rows claimed before it was learnt.
            oldest = min((self.claimed_at[r.id] for r in self.ready), default=started)
            self.pauses = {s: p for s, p in self.pauses.items() if p[0] >= oldest}
        tutors = await self.claims.active_tutors()
        quotas = {
            t: self.tutor_concurrency - self.claimed[t]
            for t in tutors
            if self.claimed[t] < self.tutor_concurrency
        }
        rows = await self.claims.claim(quotas=quotas, limit=wanted, lease=self.lease)
        for row in rows:
            self.claimed[row.tutor_id] += 1
            self.claimed_at[row.id] = started
            self.ready.append(row)
        self._start_ready()
        return len(rows)

    def _start_ready(self) -> None:
        while self.ready and self.free_slots() > 0 and not self._stopping:
            row = self.ready.popleft()
            self.active += 1
            task = asyncio.create_task(self._work(row))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _work(self, row: ClaimedRow) -> None:
        released = False

        def release() -> None:
            """The row is done at the provider: its slot goes to the next row."""
            nonlocal released
            if not released:
                released = True
                self.active -= 1
                self._unclaim(row.tutor_id)
                self.settling += 1
                self._start_ready()
                self._wake.set()

        try:
            parent = await self.switch_trace(row.switch_id)
            with self._span(row, parent):
                await self.migrate(row, release=release)
        except StoreError as exc:
            # Its lease brings the row back once PostgreSQL is; the claim loop says it is away.
            log.warning(
                "row left to its lease: %s",
                exc,
                extra={"switch_id": row.switch_id, "session_id": row.session_id},
            )
        except Exception:
            # The lease brings the row back; one session's bug never stops the others.
            log.exception(
                "migration crashed",
                extra={"switch_id": row.switch_id, "session_id": row.session_id},
            )
        finally:
            if released:
                self.settling -= 1
            else:
                self.active -= 1
                self._unclaim(row.tutor_id)
            self.claimed_at.pop(row.id, None)
            self._summarize_settled()
            self.settled += 1
            self._start_ready()
            self._wake.set()

    def _span(
        self, row: ClaimedRow, parent: Mapping[str, str]
    ) -> contextlib.AbstractContextManager[object]:
        """The row's span in its switch's trace (its provider calls inside); none untraced."""
        if not parent:
            return contextlib.nullcontext()
        return tracing.span(
            "migrate session",
            parent=parent,
            attributes={
                "relink.switch_id": row.switch_id,
                "relink.session_id": row.session_id,
                "relink.provider": row.to_provider,
            },
        )

    def _tally(self, switch_id: str) -> SwitchTally:
        tally = self.tallies.get(switch_id)
        if tally is None:
            if len(self.tallies) >= MAX_TALLIES:  # settled elsewhere (a rollback, another process)
                self.tallies.pop(next(iter(self.tallies)))
            tally = self.tallies[switch_id] = SwitchTally()
        return tally

    def _summarize_settled(self) -> None:
        """One INFO line per switch this process's writes settled: what it took at the providers."""
        for settled in self.outcomes.drain_settled():
            switch_id = str(settled["switch_id"])
            tally = self.tallies.pop(switch_id, SwitchTally())
            metrics.SWITCHES_SETTLED.labels(state=str(settled["state"])).inc()
            log.info(
                "switch %s settled %s: %s",
                switch_id,
                settled["state"],
                tally.line(settled),
                extra={"switch_id": switch_id},
            )

    def _unclaim(self, tutor_id: str) -> None:
        self.claimed[tutor_id] -= 1
        if self.claimed[tutor_id] <= 0:
            del self.claimed[tutor_id]

    async def migrate(self, row: ClaimedRow, *, release: Callable[[], None] = lambda: None) -> None:
        """Create (or reuse) the row's meeting and move its session, or decide what else to do.

        `release` is called once the meeting is made, before it is written down.
        """
        ids = {"switch_id": row.switch_id, "session_id": row.session_id}
        if not row.switch_current and row.new_meeting_external_id is None:
            await self.outcomes.skip(row, why="switch superseded")
            log.info("skipped: switch superseded", extra=ids)
            return
        if row.session_status not in ELIGIBLE_STATUSES or (row.scheduled_start_at < self.now()):
            await self.outcomes.skip(row, why=f"session {row.session_status.lower()}")
            log.info("skipped: session no longer eligible", extra=ids)
            return
        try:
            session = await self.connections.session_for(
                row.tutor_id, generation=row.switch_generation
            )
        except TokenDecryptError as exc:
            if row.new_meeting_external_id is None:
                await self._unreadable(row, exc)
                return
            session = None  # the meeting is made: moving the session needs no token
        meeting: Meeting | None = None
        if row.new_meeting_external_id is not None:
            meeting = Meeting(
                provider=row.to_provider,  # type: ignore[arg-type]
                external_id=row.new_meeting_external_id,
                join_url=row.new_join_url,
            )
        elif session is None:
            await self.outcomes.skip(row, why="switch superseded")
            return
        elif await self._waiting(row):
            self._tally(row.switch_id).waits += 1
            return
        else:
            try:
                meeting = await self._find_or_create(row, session=session)
            except ProviderError as exc:
                tally = self._tally(row.switch_id)
                if isinstance(exc, HeldBackError):
                    tally.calls -= 1  # held back here: never sent
                if isinstance(exc, HeldBackError | RateLimitedError | DailyQuotaExhaustedError):
                    tally.waits += 1
                    kind = (
                        "daily_budget"
                        if isinstance(exc, DailyQuotaExhaustedError)
                        else "rate_limit"
                    )
                    metrics.PROVIDER_WAITS.labels(provider=row.to_provider, kind=kind).inc()
                else:
                    tally.errors += 1
                # The slot is kept until the failure is written: a rate limit's
                # pause must be in place before this tutor's next claim.
                await self._failed(row, exc, session=session)
                return
            release()
            if not await self.recording.submit((row, meeting)):
                log.info(
                    "row settled meanwhile (rolled back or superseded); deleting the new meeting",
                    extra=ids,
                )
                # The session that made it still holds valid tokens.
                await self._delete_unused(row, meeting, session=session)
                return
            log.info("meeting created", extra={**ids, "meeting_id": meeting.external_id})
        if await self.completing.submit((row, meeting)):
            metrics.SESSIONS_MIGRATED.labels(provider=row.to_provider).inc()
            log.info("session migrated", extra=ids)
            return
        log.info("skipped after create: session changed; deleting the new meeting", extra=ids)
        await self._delete_unused(row, meeting, session=session)

    async def _waiting(self, row: ClaimedRow) -> bool:
        """True (and the row put back) when its switch was told to wait after it was claimed.

        The wait is written to every unsettled row of the switch, so later
        claims honour it; a row claimed ahead before it was learnt would
        otherwise call the provider early.
        """
        pause = self.pauses.get(row.switch_id)
        if pause is None:
            return False
        learnt, until = pause
        if self.claimed_at.get(row.id, learnt) > learnt or self.now() >= until:
            return False
        await self.outcomes.retry_later(
            row, at=until, error="waiting for the provider's stated wait", counts_as_attempt=False
        )
        return True

    async def _find_or_create(self, row: ClaimedRow, *, session: AuthorizedSession) -> Meeting:
        """The meeting an earlier, unanswered attempt made at the provider, else a new one.

        A first claim (`attempts == 1`) cannot have sent a create before, so it
        skips the lookup and stays one request. A re-claimed row may have
        crashed with its create in flight (Zoom made the meeting, we never
        heard), and a retried row's last create may have timed out after
        being sent; where a repeated create would duplicate (Zoom), look first.
        Attempts refused by a rate limit or quota are given back by
        `retry_later`, so they do not count here: nothing was made then.
        """
        request = self._request(row)
        tally = self._tally(row.switch_id)
        if not session.client.idempotent_create and (row.attempts > 1 or row.kind == "retry"):
            tally.calls += 1
            found = await session.find_meeting(request)
            if found is not None:
                log.info(
                    "meeting from an earlier attempt found; reusing it",
                    extra={
                        "switch_id": row.switch_id,
                        "session_id": row.session_id,
                        "meeting_id": found.external_id,
                    },
                )
                return found
        tally.calls += 1
        return await session.create_meeting(request)

    def _request(self, row: ClaimedRow) -> MeetingRequest:
        return MeetingRequest(
            switch_id=row.switch_id,
            session_id=row.session_id,
            topic=row.topic,
            start_time=row.scheduled_start_at,
            duration_min=row.duration_minutes,
            timezone=row.timezone,
        )

    async def _delete_unused(
        self, row: ClaimedRow, meeting: Meeting, *, session: AuthorizedSession | None
    ) -> None:
        """Delete a meeting this row made that no session will use, recorded first.

        Recorded on its settled row, a deletion that fails here (provider
        error, crash) is retried by the cleanup; a meeting the row or a
        session holds after all (another process recorded the same one) is kept.
        """
        verdict = await self.outcomes.unused_meeting(row, meeting)
        if verdict == "in_use":
            log.info(
                "new meeting kept: in use",
                extra={"switch_id": row.switch_id, "meeting_id": meeting.external_id},
            )
            return
        if await self._delete_quietly(row, meeting, session=session) and verdict == "recorded":
            await self.outcomes.unused_meeting_deleted(row, meeting)

    async def _delete_quietly(
        self, row: ClaimedRow, meeting: Meeting, *, session: AuthorizedSession | None
    ) -> bool:
        if session is None:
            try:
                session = await self.connections.session_at(row.tutor_id, meeting.provider)
            except TokenDecryptError as exc:
                log.error(
                    "stored tokens unreadable: %s",
                    exc,
                    extra={"switch_id": row.switch_id, "tutor_id": row.tutor_id},
                )
        if session is None or session.client.provider != meeting.provider:
            log.warning(
                "orphan meeting left: no connection to delete it with",
                extra={"switch_id": row.switch_id, "meeting_id": meeting.external_id},
            )
            return False
        try:
            await session.delete_meeting(meeting.external_id)
        except ProviderError as exc:
            log.warning(
                "could not delete an unused meeting (the cleanup tries again): %s",
                exc,
                extra={"switch_id": row.switch_id, "meeting_id": meeting.external_id},
            )
            return False
        return True

    async def _failed(
        self, row: ClaimedRow, exc: ProviderError, *, session: AuthorizedSession
    ) -> None:
        failure = failure_of(exc, streak=usage_streak(row.last_error))
        if failure.kind is FailureKind.RECONNECT_REQUIRED and await self.connections.reload(
            row.tutor_id, used=session.tokens
        ):
            # Another migrator refreshed (and Zoom rotated) the tokens meanwhile.
            await self.outcomes.retry_later(
                row, at=self.now(), error=failure.detail, counts_as_attempt=False
            )
            return
        # A call held back by the account's pacing sent nothing: whoever got the
        # 429 paused the switch already, so this row only waits its turn (one
        # pause per 429, not one per row in flight: they would contend for the
        # same rows).
        await self._decided(row, failure, pause=not isinstance(exc, HeldBackError))

    async def _unreadable(self, row: ClaimedRow, exc: TokenDecryptError) -> None:
        """The connection's tokens do not decrypt: fail clearly, call nothing, spend nothing."""
        failure = unreadable_tokens(exc, provider=row.to_provider)
        log.error(
            "stored tokens unreadable (%s): %s",
            failure.kind.value,
            exc,
            extra={"switch_id": row.switch_id, "session_id": row.session_id},
        )
        # The claim counted a create against the day's budget; none was made.
        await self.claims.give_back(row)
        await self._decided(row, failure, remaining_detail=failure.detail)

    async def _decided(
        self,
        row: ClaimedRow,
        failure: Failure,
        *,
        pause: bool = True,
        remaining_detail: str = "the provider no longer accepts this connection; reconnect it",
    ) -> None:
        """Carry out what `decide` says about the row's failed attempt.

        `pause`: whether a decision to pause the tutor is carried out here;
        `remaining_detail`: what the switch's other rows say when all fail.
        """
        ids = {"switch_id": row.switch_id, "session_id": row.session_id}
        decision = decide(failure, attempts=row.attempts, now=self.now(), policy=self.policy)
        if isinstance(decision, RetryLater):
            usage_limited = failure.kind is FailureKind.USAGE_LIMITED
            await self.outcomes.retry_later(
                row,
                at=decision.at,
                error=(
                    usage_limit_error(failure.streak, failure.detail)
                    if usage_limited
                    else f"{failure.kind.value}: {failure.detail}"
                ),
                counts_as_attempt=decision.counts_as_attempt,
            )
            if decision.pause_tutor and pause:
                self.pauses[row.switch_id] = (time.monotonic(), decision.at)
                await self.claims.pause_switch(
                    row.switch_id,
                    until=decision.at,
                    quota=failure.kind is FailureKind.QUOTA_EXCEEDED,
                    usage_limited=usage_limited,
                )
            log.info(
                "retry later: %s", failure.kind.value, extra={**ids, "at": decision.at.isoformat()}
            )
            return
        assert isinstance(decision, GiveUp)
        if await self.outcomes.fail(
            row, reason=decision.reason, detail=failure.detail, retryable=decision.retryable
        ):
            # only the row this write failed (another may have failed it with the rest)
            metrics.SESSIONS_FAILED.labels(reason=decision.reason).inc()
        log.warning("session failed: %s", decision.reason, extra=ids)
        if decision.all_remaining:
            self.connections.forget(row.tutor_id)
            count = await self.outcomes.fail_remaining(
                switch_id=row.switch_id,
                reason=decision.reason,
                detail=remaining_detail,
            )
            metrics.SESSIONS_FAILED.labels(reason=decision.reason).inc(count)
            log.warning("failed remaining sessions: %s (%d)", decision.reason, count, extra=ids)
