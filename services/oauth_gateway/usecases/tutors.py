"""The gateway's use cases: OAuth start and callback, bookings, retry and rollback requests,
re-created meetings, and what Zoom and Google notify.

Routes call one method each. Database work is synchronous SQLAlchemy, run on
worker threads so the event loop keeps serving other tutors; provider calls
are async httpx.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar

import anyio.to_thread

from services.core.db.errors import run_again
from services.core.db.models import SessionStatus, User
from services.core.logs import get_logger
from services.oauth_gateway.adapters.db import ConnectionSnapshot, GatewayStore, SaveResult
from services.oauth_gateway.adapters.web.views import (
    BookingRequest,
    ConnectionView,
    DeletedMeetingView,
    RetryAccepted,
    RollbackAccepted,
    SessionView,
    SwitchView,
)
from services.oauth_gateway.domain import (
    PROVIDER_LABELS,
    ConnectOutcome,
    Principal,
    booking_refusal,
    missing_scopes,
    scope_label,
)
from services.oauth_gateway.errors import (
    BookingFailed,
    BookingInvalid,
    BookingThrottled,
    Conflict,
    ConsentDenied,
    Forbidden,
    NoConnection,
    NotFound,
    NotificationRefused,
    OAuthRejected,
    ProviderUnavailable,
    ScopesMissing,
    StateRejected,
    TokenExchangeFailed,
)
from services.oauth_gateway.metrics import GatewayMetrics
from services.oauth_gateway.settings import GatewaySettings
from services.providers import (
    AuthorizedSession,
    GoogleMeetClient,
    Meeting,
    MeetingRequest,
    ProviderAccount,
    ProviderClient,
    ProviderError,
    RateLimitedError,
    RetryableProviderError,
    TokenSet,
    calls_for,
    new_pkce_verifier,
    watch_events,
)

log = get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


def _exchange_failure(label: str, provider: str, exc: ProviderError) -> OAuthRejected:
    """What the tutor is told when the provider fails the sign-in: a plain sentence.

    The provider's own error (code, status, body) goes to the log only: it
    means nothing to a tutor and may echo request details.
    """
    log.warning(
        "sign-in with %s failed: %s (status %s, code %s)",
        provider,
        type(exc).__name__,
        exc.status,
        exc.code,
    )
    if isinstance(exc, RetryableProviderError):
        return ProviderUnavailable(
            f"{label} is not answering right now; nothing was changed. "
            "Please try again in a few minutes."
        )
    return TokenExchangeFailed(
        f"{label} did not accept the sign-in; nothing was changed. Please try again."
    )


def utcnow() -> datetime:
    """The use cases' clock unless another is given (tests pass their own)."""
    return datetime.now(UTC)


async def in_thread(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking database work (one store call: one transaction) on a worker thread,
    again if PostgreSQL aborts it as a conflict (`core.db.errors.run_again`)."""
    what = getattr(func, "__name__", "database work")
    return await anyio.to_thread.run_sync(
        lambda: run_again(lambda: func(*args, **kwargs), what=what)
    )


@dataclass(frozen=True, slots=True)
class CallbackResult:
    """A successful callback: what happened and where to send the tutor."""

    provider: str
    saved: SaveResult

    @property
    def redirect_path(self) -> str:
        path = "/tutor/video-setup?success=true"
        if self.saved.switch_id is not None:
            path += f"&switch={self.saved.switch_id}"
        return path


class Gateway:
    """The gateway's use cases over its store and provider clients."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        store: GatewayStore,
        clients: Mapping[str, ProviderClient],
        metrics: GatewayMetrics,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clients = dict(clients)
        self.metrics = metrics
        self.clock = clock

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    def _client(self, provider: str) -> ProviderClient:
        client = self.clients.get(provider)
        if client is None:
            raise NotFound(f"unknown video provider {provider!r}")
        return client

    async def _require_tutor(self, principal: Principal) -> None:
        user = await in_thread(self.store.user, principal.user_id)
        if user is None or user.role != "tutor":
            raise Forbidden("only tutors connect video providers")

    def _session_on(
        self, client: ProviderClient, snapshot: ConnectionSnapshot, *, tutor_id: uuid.UUID
    ) -> AuthorizedSession:
        """Calls on the tutor's current tokens; a refresh is saved to that generation's row."""

        async def save(tokens: TokenSet) -> None:
            await in_thread(
                self.store.save_refreshed_tokens,
                tutor_id=tutor_id,
                generation=snapshot.generation,
                tokens=tokens,
                now=self.clock(),
            )

        # Paced as the tutor, as the migrator paces its rows: one Retry-After for both.
        return AuthorizedSession(client, snapshot.tokens, on_refresh=save, paced_as=str(tutor_id))

    # -- who is asking, and the database's health ------------------------------

    async def user(self, user_id: uuid.UUID) -> User | None:
        """One user (to greet, or to sign in as on the dev page)."""
        return await in_thread(self.store.user, user_id)

    async def users(self) -> list[User]:
        """The users the dev sign-in page lists."""
        return await in_thread(self.store.users)

    async def check_database(self) -> None:
        """Raise unless PostgreSQL answers (the readiness probe)."""
        await in_thread(self.store.ping)

    # -- OAuth ----------------------------------------------------------------

    async def start_oauth(self, principal: Principal, provider: str) -> str:
        """A fresh single-use state and PKCE verifier; the provider's consent URL."""
        client = self._client(provider)
        await self._require_tutor(principal)
        verifier = new_pkce_verifier()
        state = await in_thread(
            self.store.create_state,
            tutor_id=principal.user_id,
            provider=provider,
            verifier=verifier,
            now=self.clock(),
            ttl=timedelta(seconds=self.settings.state_ttl_s),
        )
        return client.authorization_url(state=state, code_verifier=verifier)

    async def complete_oauth(
        self,
        principal: Principal,
        provider: str,
        *,
        state: str | None,
        code: str | None,
        error: str | None,
    ) -> CallbackResult:
        """Check the state, exchange the code, and save the connection (switching if it changed)."""
        client = self._client(provider)
        label = PROVIDER_LABELS.get(provider, provider)
        if not state:
            raise StateRejected(
                "The provider sent us back without a state.", reason="state_missing"
            )
        verifier = await in_thread(
            self.store.consume_state,
            state=state,
            tutor_id=principal.user_id,
            provider=provider,
            now=self.clock(),
        )
        if error:
            if error == "access_denied":
                raise ConsentDenied(f"You declined access at {label}; nothing was changed.")
            raise TokenExchangeFailed(
                f"{label} reported an error ({error[:60]}); nothing was changed.",
                reason="provider_error",
            )
        if not code:
            raise TokenExchangeFailed(f"{label} sent no authorization code.", reason="code_missing")
        # Who the tutor is connected to now, read before the exchange: if a step
        # after it fails, this decides whether the new tokens may be revoked.
        before = await in_thread(self.store.connection, principal.user_id)
        try:
            tokens = await client.exchange_code(code, code_verifier=verifier)
        except ProviderError as exc:
            raise _exchange_failure(label, provider, exc) from exc
        account: ProviderAccount | None = None
        try:
            # Granular consent lets the tutor untick a permission: a connection
            # without it would commit a switch whose every session then fails.
            # Checked before the account call (which needs a scope of its own) and
            # before anything is written.
            missing = missing_scopes(client.scopes, tokens.scopes)
            if missing:
                log.info(
                    "callback from %s refused: %d scope(s) not granted", provider, len(missing)
                )
                words = ", ".join(scope_label(s) for s in missing)
                raise ScopesMissing(
                    f"{label} did not give relink permission for: {words}. relink needs "
                    f"{'it' if len(missing) == 1 else 'them'} to create and update your sessions' "
                    "meetings; nothing was changed. Please try again and leave "
                    f"{'it' if len(missing) == 1 else 'them'} ticked.",
                    provider=provider,
                    missing=missing,
                )
            try:
                # Paced as the tutor, like every call for this account: a 429 the
                # migrator just got for it (provider_holds) is waited out here too.
                with calls_for(str(principal.user_id)):
                    account = await client.account(tokens.access_token)
            except ProviderError as exc:
                raise _exchange_failure(label, provider, exc) from exc
            saved = await in_thread(
                self.store.save_connection,
                tutor_id=principal.user_id,
                provider=provider,
                tokens=tokens,
                account=account,
                now=self.clock(),
                rollback_grace=timedelta(seconds=self.settings.rollback_grace_s),
            )
        except Exception:
            await self._give_back(client, tokens, before=before, account=account)
            raise
        if provider == "google_meet":
            await self._watch_calendar(principal.user_id, tokens, generation=saved.generation)
        if saved.outcome is ConnectOutcome.SWITCHED:
            log.info(
                "tutor %s switched to %s (switch %s, generation %s)",
                principal.user_id,
                provider,
                saved.switch_id,
                saved.generation,
            )
        return CallbackResult(provider=provider, saved=saved)

    async def _give_back(
        self,
        client: ProviderClient,
        tokens: TokenSet,
        *,
        before: ConnectionView | None,
        account: ProviderAccount | None,
    ) -> None:
        """Revoke the tokens a callback was given when a step after the exchange failed.

        Nothing keeps them, so nothing should be able to use them. Except:
        Google keeps one grant per account and app, and revoking any token of
        it revokes all ("Revokes all of the scopes that the user granted to the
        app", developers.google.com/identity/oauth2/web/reference/js-reference
        #google.accounts.oauth2.revoke); Zoom keeps only the newest
        authorization of an account. When the tutor is connected to this
        provider already and the new tokens' account is that one (or unknown),
        they are dropped, not revoked: revoking would disconnect the tutor.
        A failed revocation is logged (never the token) and does not change the
        answer the tutor gets.
        """
        same_grant = (
            before is not None
            and before.provider == client.provider
            and (
                account is None
                or (before.provider_account_email or "").lower() == account.email.lower()
            )
        )
        if same_grant:
            log.info(
                "callback at %s failed after the code exchange; its tokens were dropped, not "
                "revoked (they may be the live connection's grant)",
                client.provider,
            )
            return
        try:
            await client.revoke(tokens.refresh_token or tokens.access_token)
        except ProviderError as exc:
            log.warning(
                "could not revoke the tokens of a failed callback at %s: %s",
                client.provider,
                type(exc).__name__,
            )
            return
        self.metrics.callback(provider=client.provider, outcome="tokens_revoked")
        log.info("revoked the tokens of a failed callback at %s", client.provider)

    # -- the connection and its switches ---------------------------------------

    async def connection(self, principal: Principal) -> ConnectionView | None:
        """The tutor's current connection (never its tokens), or None."""
        return await in_thread(self.store.connection, principal.user_id)

    async def switch(
        self, principal: Principal, switch_id: uuid.UUID, *, with_failures: bool = True
    ) -> SwitchView:
        return await in_thread(
            self.store.switch,
            tutor_id=principal.user_id,
            switch_id=switch_id,
            now=self.clock(),
            with_failures=with_failures,
        )

    async def history(self, principal: Principal) -> list[SwitchView]:
        return await in_thread(self.store.switches, principal.user_id, now=self.clock())

    async def request_retry(self, principal: Principal, switch_id: uuid.UUID) -> RetryAccepted:
        event_id, sessions = await in_thread(
            self.store.request_retry,
            tutor_id=principal.user_id,
            switch_id=switch_id,
            now=self.clock(),
        )
        return RetryAccepted(switch_id=switch_id, session_ids=sessions, event_id=event_id)

    async def request_rollback(
        self, principal: Principal, switch_id: uuid.UUID
    ) -> RollbackAccepted:
        event_id, provider, generation = await in_thread(
            self.store.request_rollback,
            tutor_id=principal.user_id,
            switch_id=switch_id,
            now=self.clock(),
        )
        return RollbackAccepted(
            switch_id=switch_id, to_provider=provider, generation=generation, event_id=event_id
        )

    # -- sessions and bookings ------------------------------------------------

    async def upcoming_for(self, principal: Principal) -> list[SessionView]:
        """The caller's upcoming sessions: as tutor or as student."""
        if principal.role == "tutor":
            return await in_thread(
                self.store.upcoming_sessions, now=self.clock(), tutor_id=principal.user_id
            )
        return await in_thread(
            self.store.upcoming_sessions, now=self.clock(), student_id=principal.user_id
        )

    async def accept_booking(
        self, principal: Principal, request: BookingRequest, *, external_id: str | None = None
    ) -> SessionView:
        """Create the booking, its session and its meeting at the tutor's current provider.

        `external_id` is the platform's own id for the session (the service API).
        """
        await self._require_tutor(principal)
        student = await in_thread(self.store.user, request.student_id)
        if student is None or student.role != "student":
            raise NotFound("no such student")
        refusal = booking_refusal(request.scheduled_start_at, now=self.clock())
        if refusal is not None:
            self.metrics.booking(outcome="invalid")
            raise BookingInvalid(refusal)
        booking_id, session_id = uuid.uuid4(), uuid.uuid4()
        for _ in range(self.settings.booking_attempts):
            meeting = await self._try_booking(
                principal, request, booking_id, session_id, external_id=external_id
            )
            if meeting is not None:
                self.metrics.booking(outcome="accepted")
                return SessionView(
                    id=session_id,
                    booking_id=booking_id,
                    tutor_id=principal.user_id,
                    student_id=request.student_id,
                    student_name=student.name,
                    topic=request.topic,
                    status=SessionStatus.SCHEDULED,
                    provider=meeting.provider,
                    join_url=meeting.join_url,
                    scheduled_start_at=request.scheduled_start_at,
                    duration_minutes=request.duration_minutes,
                )
        self.metrics.booking(outcome="conflict")
        raise Conflict("the tutor's video provider kept changing; please try again")

    async def _try_booking(
        self,
        principal: Principal,
        request: BookingRequest,
        booking_id: uuid.UUID,
        session_id: uuid.UUID,
        *,
        external_id: str | None = None,
    ) -> Meeting | None:
        """The meeting, if the booking was recorded with it; None if a switch got in between."""
        tutor_id = principal.user_id
        snapshot = await in_thread(self.store.connection_snapshot, tutor_id)
        if snapshot is None:
            raise NoConnection("connect a video provider before accepting bookings")
        client = self._client(snapshot.provider)

        session = self._session_on(client, snapshot, tutor_id=tutor_id)
        meeting_request = MeetingRequest(
            # Per generation, so a retry at the same provider after a round trip is a new event.
            switch_id=f"booking-{booking_id}-g{snapshot.generation}",
            session_id=str(session_id),
            topic=request.topic,
            start_time=request.scheduled_start_at,
            duration_min=request.duration_minutes,
            timezone=request.timezone,
        )
        try:
            meeting = await session.create_meeting(meeting_request)
        except RateLimitedError as exc:
            self.metrics.booking(outcome="provider_error")
            raise BookingThrottled(
                "the video provider asks to wait before making this tutor's meeting",
                retry_after_s=exc.retry_after_s or 1.0,
            ) from exc
        except ProviderError as exc:
            self.metrics.booking(outcome="provider_error")
            raise BookingFailed(f"could not create the meeting: {exc}") from exc
        try:
            recorded = await in_thread(
                self.store.record_booking,
                booking_id=booking_id,
                session_id=session_id,
                tutor_id=tutor_id,
                student_id=request.student_id,
                topic=request.topic,
                start=request.scheduled_start_at,
                duration_minutes=request.duration_minutes,
                timezone=request.timezone,
                meeting=meeting,
                generation=snapshot.generation,
                now=self.clock(),
                external_id=external_id,
            )
        except Exception:
            # The meeting exists at the provider but nothing here points at it:
            # delete it before answering, so a failed booking leaves nothing behind.
            await self._drop_orphan(session, meeting)
            raise
        if not recorded:
            # A switch committed while the meeting was being made: drop the
            # meeting at the old provider; the caller makes one at the new one.
            await self._drop_orphan(session, meeting)
            return None
        return meeting

    async def _drop_orphan(self, session: AuthorizedSession, meeting: Meeting) -> None:
        """Delete a meeting a booking made but did not record (a switch got in, or a failure).

        Deletion is tried a few times (provider errors only); if it still fails
        the log line names the meeting for an operator to delete by hand.
        """
        for attempt in range(1, self.settings.booking_attempts + 1):
            try:
                await session.delete_meeting(meeting.external_id)
            except ProviderError as exc:
                if attempt == self.settings.booking_attempts:
                    log.error(
                        "a booking did not record its meeting; could not delete %s "
                        "meeting %s (%s): delete it by hand",
                        meeting.provider,
                        meeting.external_id,
                        type(exc).__name__,
                    )
                continue
            log.info(
                "a booking did not record its meeting; deleted %s meeting %s",
                meeting.provider,
                meeting.external_id,
            )
            return

    # -- what the providers tell us ------------------------------------------

    async def zoom_app_removed(
        self, *, notification_id: str, zoom_user_id: str, deauthorized_at: datetime
    ) -> dict[str, str]:
        """Zoom's `app_deauthorized`: disconnect every connection on that Zoom user, once."""
        outcome = await in_thread(
            self.store.deauthorize,
            notification_id=notification_id,
            provider="zoom",
            account_id=zoom_user_id,
            deauthorized_at=deauthorized_at,
            now=self.clock(),
        )
        log.info("zoom app_deauthorized: %s", outcome)
        return {"status": outcome}

    async def zoom_meeting_deleted(
        self, *, notification_id: str, meeting_id: str, deleted_at: datetime
    ) -> dict[str, str]:
        """Zoom's `meeting.deleted`: record it for the upcoming session whose meeting it is."""
        outcome = await in_thread(
            self.store.record_meeting_deletion,
            notification_id=notification_id,
            provider="zoom",
            meeting_id=meeting_id,
            deleted_at=deleted_at,
            now=self.clock(),
        )
        log.info("zoom meeting.deleted: %s", outcome)
        return {"status": outcome}

    async def deleted_meetings(self, principal: Principal) -> list[DeletedMeetingView]:
        return await in_thread(self.store.open_deletions, principal.user_id, now=self.clock())

    async def recreate_meeting(self, principal: Principal, session_id: uuid.UUID) -> Meeting:
        """A new meeting at the tutor's current provider for a session whose meeting was deleted."""
        tutor_id = principal.user_id
        deletion = await in_thread(self.store.deletion, tutor_id=tutor_id, session_id=session_id)
        if deletion is None:
            raise NotFound("no deleted meeting to re-create for this session")
        sessions = await in_thread(
            self.store.upcoming_sessions, now=self.clock(), tutor_id=tutor_id, limit=1000
        )
        view = next((v for v in sessions if v.id == session_id), None)
        if view is None:
            raise Conflict("this session is no longer upcoming")
        booking = await in_thread(self.store.booking, view.booking_id)
        snapshot = await in_thread(self.store.connection_snapshot, tutor_id)
        if snapshot is None:
            raise NoConnection("connect a video provider first")
        client = self._client(snapshot.provider)

        session = self._session_on(client, snapshot, tutor_id=tutor_id)
        request = MeetingRequest(
            # One key per deletion: a repeated click finds (Zoom marker) or
            # re-reads (Google event id) the meeting the first click made.
            switch_id=f"recreate-{deletion.id}-g{snapshot.generation}",
            session_id=str(session_id),
            topic=view.topic or "Tutoring session",
            start_time=view.scheduled_start_at,
            duration_min=view.duration_minutes,
            timezone=booking.timezone if booking else "UTC",
        )
        try:
            meeting = await session.find_meeting(request) if not client.idempotent_create else None
            meeting = meeting or await session.create_meeting(request)
        except ProviderError as exc:
            raise BookingFailed(f"could not re-create the meeting: {exc}") from exc
        replaced = await in_thread(
            self.store.replace_deleted_meeting,
            deletion_id=deletion.id,
            tutor_id=tutor_id,
            meeting=meeting,
            generation=snapshot.generation,
            now=self.clock(),
        )
        if not replaced:
            try:
                await session.delete_meeting(meeting.external_id)
            except ProviderError as exc:
                log.warning("could not delete an unused re-created meeting: %s", exc)
            raise Conflict("the session changed meanwhile; reload the page")
        log.info("meeting re-created for session %s", session_id)
        return meeting

    # -- Google Calendar push notifications -----------------------------------

    async def _watch_calendar(
        self, tutor_id: uuid.UUID, tokens: TokenSet, *, generation: int
    ) -> None:
        """Open an events.watch channel on the tutor's calendar (best effort: logged on failure).

        The connection is already saved: a channel that could not be opened
        only means a cancelled event is not noticed, never a refused sign-in.
        """
        client = self.clients.get("google_meet")
        if not isinstance(client, GoogleMeetClient):
            return
        channel_id, token = str(uuid.uuid4()), secrets.token_urlsafe(32)
        try:
            with calls_for(str(tutor_id)):  # paced as the tutor's account (provider_holds)
                channel = await watch_events(
                    client,
                    tokens.access_token,
                    channel_id=channel_id,
                    address=f"{self.settings.public_base_url}/webhooks/google",
                    token=token,
                    ttl_s=self.settings.google_watch_ttl_s,
                )
        except ProviderError as exc:
            log.warning("could not watch the tutor's calendar: %s", exc)
            return
        await in_thread(
            self.store.save_channel,
            tutor_id=tutor_id,
            provider="google_meet",
            channel_id=channel.id,
            token_sha256=hashlib.sha256(token.encode()).hexdigest(),
            resource_id=channel.resource_id,
            generation=generation,
            expires_at=channel.expires_at,
            now=self.clock(),
        )

    async def google_notification(
        self,
        *,
        channel_id: str | None,
        token: str | None,
        resource_id: str | None,
        resource_state: str | None,
        message_number: str | None,
    ) -> dict[str, str]:
        """A Calendar push notification: check the tutor's upcoming events that are ours.

        The notification names no event, so each upcoming session's event is
        read back (events.get); those gone or cancelled are recorded.
        """
        channel = await in_thread(self.store.channel, channel_id) if channel_id else None
        given = hashlib.sha256((token or "").encode()).hexdigest()
        if (
            channel is None
            or not hmac.compare_digest(given, channel.token_sha256)
            or resource_id != channel.resource_id
        ):
            raise NotificationRefused("unknown channel", reason="bad_channel")
        try:
            number = int(message_number or "")
        except ValueError as exc:
            raise NotificationRefused("no message number", reason="malformed") from exc
        if not await in_thread(
            self.store.take_channel_message, channel_id=channel.id, number=number
        ):
            return {"status": "duplicate"}
        if resource_state == "sync":
            return {"status": "sync"}
        snapshot = await in_thread(self.store.connection_snapshot_or_none, channel.tutor_id)
        if (
            snapshot is None
            or snapshot.provider != "google_meet"
            or snapshot.generation != channel.generation
        ):
            return {"status": "stale_channel"}
        client = self._client("google_meet")

        session = self._session_on(client, snapshot, tutor_id=channel.tutor_id)
        now = self.clock()
        watched = await in_thread(
            self.store.watched_meetings, tutor_id=channel.tutor_id, provider="google_meet", now=now
        )
        gone = []
        for session_id, event_id in watched:
            try:
                if await session.get_meeting(event_id) is None:
                    gone.append((session_id, event_id))
            except ProviderError as exc:
                log.warning("could not read back an event after a notification: %s", exc)
                return {"status": "provider_error"}
        recorded = await in_thread(
            self.store.record_deleted_events,
            tutor_id=channel.tutor_id,
            provider="google_meet",
            gone=gone,
            now=now,
        )
        return {"status": f"recorded:{recorded}"}
