"""The simulator's world in memory: accounts, grants, tokens, meetings, faults, a movable clock.

Every method is synchronous and runs on the one event loop of the one
process, so no two requests interleave inside a method: that is what makes
the state asyncio-safe without locks. Only the routes await (injected
latency), and they do so before or after touching the state, never inside.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from devtools.provider_sim.settings import ProviderSimSettings

Provider = Literal["zoom", "google"]
PACIFIC = ZoneInfo("America/Los_Angeles")


class Faults(BaseModel):
    """Injected misbehaviour; None means "not set here" (account falls back to provider-wide)."""

    latency_ms: float | None = None
    error_rate: float | None = None
    burst_429: int | None = None
    retry_after_s: float | None = None
    daily_quota: int | None = None
    token_ttl_s: int | None = None
    revoked: bool | None = None
    down: bool | None = None
    conference_pending_reads: int | None = None
    conference_failure: bool | None = None
    # Google's refusal forms, each a count of the next answers it applies to
    # (Calendar API guide "Handle API errors"; devtools/provider_sim/google_api.py).
    google_rate_limit_403: int | None = None
    google_user_rate_limit_403: int | None = None
    google_usage_limits: int | None = None
    conference_failures: int | None = None
    conference_missing: int | None = None


@dataclass
class Grant:
    """One consent: a provider account let one app in with these scopes."""

    id: str
    provider: Provider
    client_id: str
    email: str
    scope: str
    revoked: bool = False

    def has_scope(self, *accepted: str) -> bool:
        """Whether the consent covered any of `accepted` (space-separated, RFC 6749 §3.3)."""
        granted = set(self.scope.replace(",", " ").split())
        return any(scope in granted for scope in accepted)


@dataclass
class AuthCode:
    """An issued authorization code waiting for its exchange."""

    grant: Grant
    redirect_uri: str
    code_challenge: str
    expires_at: float


@dataclass
class AccountState:
    """What one provider account has: meetings or events, and what it was asked."""

    provider: Provider
    email: str
    id: str
    meetings: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending_reads: dict[str, int] = field(default_factory=dict)
    conferences: dict[str, str] = field(default_factory=dict)  # requestId -> conference id
    create_calls: int = 0
    daily_creates: dict[date, int] = field(default_factory=dict)
    # A 429's Retry-After, as a monotonic deadline; API calls that arrive
    # before it are counted (a client that does not wait as told), by the rule
    # in faults.py `sent_too_early`: `limited_at` is when the 429 was given and
    # `limited_peer` the connection it went out on.
    limited_at: float = 0.0
    limited_peer: str = ""
    wait_until: float = 0.0
    early_calls: int = 0
    # What the first early calls were (method, path, how far into the wait): for diagnosis.
    early_call_log: list[str] = field(default_factory=list)
    # Every authenticated API call of the account (creates, reads, lists, deletes).
    api_calls: int = 0
    # Zoom: the tracking fields the account's admin defined (Zoom API "Tracking
    # fields"); a meeting may only carry these. None defined unless the admin API says so.
    tracking_fields: set[str] = field(default_factory=set)


class SimState:
    """All simulated accounts and their tokens, behind plain synchronous methods."""

    def __init__(self, settings: ProviderSimSettings) -> None:
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        """Forget everything: accounts, tokens, faults, clock offset."""
        self.clock_offset_s = 0.0
        self.rng = random.Random(self.settings.seed)
        self.accounts: dict[tuple[Provider, str], AccountState] = {}
        self.codes: dict[str, AuthCode] = {}
        self.access_tokens: dict[str, tuple[Grant, float]] = {}
        self.refresh_tokens: dict[str, Grant] = {}
        self.faults: dict[tuple[Provider, str], Faults] = {}
        self.issued_tokens: list[str] = []
        self.next_zoom_id = 81_000_000_000 + self.rng.randrange(1_000_000)

    # -- clock ------------------------------------------------------------------

    def now(self) -> float:
        """Simulated epoch seconds: wall time plus what the admin API moved forward."""
        return time.time() + self.clock_offset_s

    def now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    def advance(self, seconds: float) -> None:
        self.clock_offset_s += seconds

    # -- faults -------------------------------------------------------------------

    def set_faults(self, provider: Provider, faults: Faults, *, email: str = "*") -> None:
        self.faults[(provider, email)] = faults

    def clear_faults(self, provider: Provider, *, email: str = "*") -> None:
        self.faults.pop((provider, email), None)

    def fault(self, provider: Provider, email: str | None, name: str) -> Any:
        """An account's fault value, else the provider-wide one, else None."""
        for scope in ((provider, email), (provider, "*")) if email else ((provider, "*"),):
            faults = self.faults.get(scope)
            if faults is not None and getattr(faults, name) is not None:
                return getattr(faults, name)
        return None

    def take_429(self, provider: Provider, email: str | None) -> float | None:
        """Spend one response of a 429 burst; its Retry-After, or None when no burst is left."""
        for scope in ((provider, email), (provider, "*")) if email else ((provider, "*"),):
            faults = self.faults.get(scope)
            if faults is not None and faults.burst_429:
                faults.burst_429 -= 1
                return faults.retry_after_s if faults.retry_after_s is not None else 1.0
        return None

    def take_count(self, provider: Provider, email: str | None, name: str) -> bool:
        """Spend one of a counted fault (the account's, else provider-wide); False if none."""
        for scope in ((provider, email), (provider, "*")) if email else ((provider, "*"),):
            faults = self.faults.get(scope)
            left = getattr(faults, name) if faults is not None else None
            if left:
                setattr(faults, name, left - 1)
                return True
        return False

    def injected_error(self, provider: Provider, email: str | None) -> bool:
        rate = self.fault(provider, email, "error_rate") or 0.0
        return rate > 0 and self.rng.random() < rate

    # -- accounts, codes and tokens -----------------------------------------------

    def account(self, provider: Provider, email: str) -> AccountState:
        """The account for an email, made on first sign-in with a stable id."""
        key = (provider, email.lower())
        if key not in self.accounts:
            digest = hashlib.sha256(f"{provider}:{key[1]}".encode()).hexdigest()
            # Zoom user ids are 22-character strings; Google `sub` is numeric.
            account_id = digest[:22] if provider == "zoom" else str(int(digest[:16], 16))
            self.accounts[key] = AccountState(provider=provider, email=key[1], id=account_id)
        return self.accounts[key]

    def issue_code(
        self,
        *,
        provider: Provider,
        client_id: str,
        email: str,
        scope: str,
        redirect_uri: str,
        code_challenge: str,
    ) -> str:
        self.account(provider, email)
        grant = Grant(
            id=secrets.token_hex(8),
            provider=provider,
            client_id=client_id,
            email=email.lower(),
            scope=scope,
        )
        code = secrets.token_urlsafe(24)
        # Zoom OAuth docs ("Get an access token"): the authorization code is valid
        # for five minutes; Google's keep code_ttl_s. The movable clock ages them.
        ttl = self.settings.zoom_code_ttl_s if provider == "zoom" else self.settings.code_ttl_s
        self.codes[code] = AuthCode(
            grant=grant,
            redirect_uri=redirect_uri,
            code_challenge=code_challenge,
            expires_at=self.now() + ttl,
        )
        return code

    def take_code(self, code: str) -> AuthCode | None:
        """The code's record, removed: codes are single-use."""
        record = self.codes.pop(code, None)
        if record is None or record.expires_at < self.now():
            return None
        return record

    def revoke_earlier_grants(self, grant: Grant) -> int:
        """Revoke the account's other grants for the same app (Zoom re-authorization).

        Zoom OAuth docs: when a user authorizes the app again, the access and
        refresh tokens of the earlier authorization stop working; only the
        newest consent's tokens are valid.
        """
        earlier = {
            g.id: g
            for g in [*self.refresh_tokens.values(), *(g for g, _ in self.access_tokens.values())]
            if g.id != grant.id
            and (g.provider, g.email, g.client_id) == (grant.provider, grant.email, grant.client_id)
            and not g.revoked
        }
        for other in earlier.values():
            other.revoked = True
        return len(earlier)

    def issue_tokens(self, grant: Grant) -> dict[str, Any]:
        """A fresh access and refresh token pair for a grant, as the token endpoint answers."""
        ttl = self.fault(grant.provider, grant.email, "token_ttl_s") or self.settings.token_ttl_s
        access = secrets.token_urlsafe(32)
        refresh = secrets.token_urlsafe(32)
        self.access_tokens[access] = (grant, self.now() + ttl)
        self.refresh_tokens[refresh] = grant
        # every token ever handed out, so a leak checker can look for them anywhere
        self.issued_tokens.extend((access, refresh))
        return {
            "access_token": access,
            "token_type": "bearer" if grant.provider == "zoom" else "Bearer",
            "refresh_token": refresh,
            "expires_in": ttl,
            "scope": grant.scope,
        }

    def grant_alive(self, grant: Grant) -> bool:
        return not grant.revoked and not self.fault(grant.provider, grant.email, "revoked")

    def refresh(
        self, provider: Provider, refresh_token: str, *, rotate: bool
    ) -> dict[str, Any] | None:
        """New tokens for a refresh token; with `rotate` (Zoom) the old refresh token dies."""
        grant = self.refresh_tokens.get(refresh_token)
        if grant is None or grant.provider != provider or not self.grant_alive(grant):
            return None
        if rotate:
            del self.refresh_tokens[refresh_token]
            return self.issue_tokens(grant)
        answer = self.issue_tokens(grant)
        # Google keeps the refresh token and does not send a new one.
        del self.refresh_tokens[answer.pop("refresh_token")]
        return answer

    def bearer(self, provider: Provider, access_token: str) -> tuple[Grant | None, str]:
        """The grant behind an access token, or None with why ("invalid", "expired")."""
        entry = self.access_tokens.get(access_token)
        if entry is None or entry[0].provider != provider or not self.grant_alive(entry[0]):
            return None, "invalid"
        if entry[1] <= self.now():
            return None, "expired"
        return entry[0], "ok"

    def revoke_token(self, provider: Provider, token: str) -> bool:
        """Revoke the grant behind an access or refresh token (RFC 7009).

        Google keeps one grant per account and app, so revoking any of its
        tokens revokes every token the app holds for that account: "Revokes
        all of the scopes that the user granted to the app"
        (developers.google.com/identity/oauth2/web/reference/js-reference
        #google.accounts.oauth2.revoke). Zoom keeps only the newest
        authorization anyway (`revoke_earlier_grants`).
        """
        grant = self.refresh_tokens.get(token) or (self.access_tokens.get(token) or (None, 0))[0]
        if grant is None or grant.provider != provider:
            return False
        grant.revoked = True
        if provider == "google":
            for other in self._grants(provider, grant.email):
                if other.client_id == grant.client_id:
                    other.revoked = True
        return True

    def _grants(self, provider: Provider, email: str) -> list[Grant]:
        """Every grant of an account, once each."""
        found = {
            g.id: g
            for g in [*self.refresh_tokens.values(), *(g for g, _ in self.access_tokens.values())]
            if (g.provider, g.email) == (provider, email.lower())
        }
        return list(found.values())

    def revoke_account(self, provider: Provider, email: str) -> int:
        """Revoke every grant of an account, as if the user removed the app."""
        grants = {g.id: g for g in self._grants(provider, email)}
        for grant in grants.values():
            grant.revoked = True
        return len(grants)

    def expire_tokens(self, provider: Provider, email: str) -> int:
        """Make every access token of an account expired now."""
        count = 0
        for token, (grant, _) in list(self.access_tokens.items()):
            if (grant.provider, grant.email) == (provider, email.lower()):
                self.access_tokens[token] = (grant, self.now() - 1)
                count += 1
        return count

    # -- meeting creation quota -------------------------------------------------------

    def quota_day(self, provider: Provider) -> date:
        """The quota day: Zoom counts in UTC, Google in Pacific time."""
        now = self.now_dt()
        return (now if provider == "zoom" else now.astimezone(PACIFIC)).date()

    def count_create(self, account: AccountState) -> bool:
        """Record a create call; False when the account's daily cap is already spent."""
        account.create_calls += 1
        cap = self.fault(account.provider, account.email, "daily_quota")
        if cap is None and account.provider == "zoom":
            cap = self.settings.zoom_daily_meeting_cap
        day = self.quota_day(account.provider)
        used = account.daily_creates.get(day, 0)
        if cap is not None and used >= cap:
            return False
        account.daily_creates[day] = used + 1
        return True

    def next_reset(self, provider: Provider) -> datetime:
        """When the quota day rolls over, in UTC."""
        tz = UTC if provider == "zoom" else PACIFIC
        local = self.now_dt().astimezone(tz)
        midnight = datetime(local.year, local.month, local.day, tzinfo=tz) + timedelta(days=1)
        return midnight.astimezone(UTC)

    def new_zoom_id(self) -> str:
        self.next_zoom_id += 1
        return str(self.next_zoom_id)

    def snapshot(self, provider: Provider, email: str) -> dict[str, Any]:
        """What an account has, for the admin API."""
        account = self.account(provider, email)
        live = [m for m in account.meetings.values() if m.get("status") != "cancelled"]
        return {
            "provider": provider,
            "email": account.email,
            "id": account.id,
            "meetings": live,
            "create_calls": account.create_calls,
            "early_calls": account.early_calls,
            "early_call_log": list(account.early_call_log),
            "api_calls": account.api_calls,
            "creates_today": account.daily_creates.get(self.quota_day(provider), 0),
            "conferences": len(set(account.conferences.values())),
            "grants": {
                "live": sum(self.grant_alive(g) for g in self._grants(provider, email)),
                "revoked": sum(g.revoked for g in self._grants(provider, email)),
            },
        }
