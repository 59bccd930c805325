"""The inline callback as the brief wrote it: connect, migrate every future session, answer."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlencode

from devtools.baseline.errors import CodeExchangeFailed
from devtools.baseline.store import BaselineStore
from services.providers import MeetingRequest, ProviderClient, ProviderError, new_pkce_verifier

log = logging.getLogger(__name__)


@dataclass
class MigrationSummary:
    """What `migrateSessionsToNewProvider` returned: counts and the errors it logged."""

    migrated: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CallbackOutcome:
    provider: str
    previous_provider: str | None
    summary: MigrationSummary | None

    @property
    def redirect_path(self) -> str:
        """The brief's redirects: `migrated=N`, or `migration_warning=true` when any failed."""
        query: dict[str, str] = {"success": "true"}
        if self.summary is not None:
            if self.summary.failed:
                query["migration_warning"] = "true"
            else:
                query["migrated"] = str(self.summary.migrated)
        return f"/tutor/video-setup?{urlencode(query)}"


async def migrate_sessions_to_new_provider(
    store: BaselineStore,
    *,
    client: ProviderClient,
    access_token: str,
    tutor_id: uuid.UUID,
) -> MigrationSummary:
    """Each future session in turn: a meeting at the new provider, then its row updated."""
    summary = MigrationSummary()
    # Google derives its event id from (switch, session): a fresh key per run,
    # since the same session may come back to the same provider later.
    run_key = f"inline-{uuid.uuid4()}"
    for session in await store.future_sessions(tutor_id):
        request = MeetingRequest(
            switch_id=run_key,
            session_id=str(session.id),
            topic=session.topic,
            start_time=session.start,
            duration_min=session.duration_min,
            timezone=session.timezone,
        )
        try:
            meeting = await client.create_meeting(access_token, request)
            await store.update_session(session.id, meeting=meeting)
        except ProviderError as exc:
            # The brief: continue even if some sessions fail, log every error.
            summary.failed += 1
            summary.errors.append(f"session {session.id}: {exc}")
            log.warning("inline migration of session %s failed: %s", session.id, exc)
            continue
        summary.migrated += 1
    return summary


class InlineCallback:
    """The start and callback use cases over the store and one client per provider."""

    def __init__(
        self,
        *,
        store: BaselineStore,
        clients: Mapping[str, ProviderClient],
        state_ttl: timedelta,
    ) -> None:
        self.store = store
        self.clients = dict(clients)
        self.state_ttl = state_ttl

    async def start(self, tutor_id: uuid.UUID, provider: str) -> str:
        """The provider's consent URL with a fresh state and PKCE challenge."""
        client = self.clients[provider]
        verifier = new_pkce_verifier()
        state = await self.store.create_state(
            tutor_id=tutor_id, provider=provider, verifier=verifier, ttl=self.state_ttl
        )
        return client.authorization_url(state=state, code_verifier=verifier)

    async def complete(self, provider: str, *, state: str, code: str) -> CallbackOutcome:
        """Exchange the code, save the connection, and migrate inline if the provider changed."""
        client = self.clients[provider]
        tutor_id, verifier = await self.store.consume_state(state=state, provider=provider)
        try:
            tokens = await client.exchange_code(code, code_verifier=verifier)
            account = await client.account(tokens.access_token)
        except ProviderError as exc:
            raise CodeExchangeFailed(f"{provider} did not accept the sign-in") from exc
        previous = await self.store.save_connection(
            tutor_id=tutor_id, provider=provider, tokens=tokens, account=account
        )
        if previous is None or previous == provider:
            return CallbackOutcome(provider, previous, None)
        summary = await migrate_sessions_to_new_provider(
            self.store, client=client, access_token=tokens.access_token, tutor_id=tutor_id
        )
        return CallbackOutcome(provider, previous, summary)

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
