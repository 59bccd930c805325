"""What Zoom and Google clients share: the OAuth code flow, one pooled httpx client, retries.

The OAuth wire format (authorization URL, PKCE S256 challenge, token and
revocation request bodies) comes from Authlib's protocol modules; the requests
go through our own `httpx.AsyncClient`. Authlib's `AsyncOAuth2Client` is not
used: it keeps one token on the client instance (made for one user per
client, where we serve every tutor through one connection pool), and in
Authlib 1.9 its httpx integration is a deprecated fallback to `httpx2`.
"""

from __future__ import annotations

import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Self, TypeVar

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7009 import prepare_revoke_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from services.core import metrics, tracing
from services.core.backoff import Backoff, RetryPolicy
from services.core.logs import get_logger
from services.providers._errors import (
    AuthorizationRevokedError,
    InvalidRequestError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from services.providers._models import (
    Meeting,
    MeetingRequest,
    ProviderAccount,
    ProviderName,
    TokenSet,
)
from services.providers._pacing import AccountPacer, SharedHolds, current_account
from services.providers._ratelimit import retry_after_from_headers
from services.providers._retry import RetryObserver, call_with_retry
from services.providers._settings import ProviderSettings

log = get_logger(__name__)

T = TypeVar("T")

# Token endpoint answers to a refresh that only a new consent can fix.
REVOKED_TOKEN_CODES = frozenset(
    {"invalid_grant", "invalid_request", "invalid_token", "4711", "4735", "4741"}
)

# RFC 7636 §4.1: a verifier of 43-128 characters; 64 of Authlib's URL-safe alphabet.
PKCE_VERIFIER_LENGTH = 64


def new_pkce_verifier() -> str:
    """A fresh PKCE code verifier (RFC 7636), kept by the caller until the callback."""
    return str(generate_token(PKCE_VERIFIER_LENGTH))


def http_clients(settings: ProviderSettings) -> list[httpx.AsyncClient]:
    """Pooled clients with timeouts on every phase of every call, `max_connections` in all.

    Several small pools instead of one big one: httpcore 1.0's pool does work
    proportional to its connections times its waiting requests on every
    request (encode/httpx#3215), so one pool of 100 busy connections spent
    most of its time in bookkeeping (~130 requests/s on loopback where pools
    of 8 give over 1,000). Each small pool still keeps its connections alive.
    """
    timeout = httpx.Timeout(
        settings.read_timeout_s,
        connect=settings.connect_timeout_s,
        pool=settings.pool_timeout_s,
    )
    size = min(settings.pool_shard_size, settings.max_connections)
    shards = -(-settings.max_connections // size)
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    # One TLS context for all pools: loading the CA bundle costs ~20 ms each time.
    tls = httpx.create_ssl_context()
    headers = {"Accept": "application/json"}
    return [
        httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers, verify=tls)
        for _ in range(shards)
    ]


def transport_error(exc: httpx.TransportError, *, provider: str, operation: str) -> ProviderError:
    """Translate an httpx transport failure; URLs and headers stay out of the message."""
    # Connection failures happen before the request is written, so even a
    # non-idempotent create may be repeated after them.
    sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return ProviderUnavailableError(
        f"{operation} {kind} ({type(exc).__name__})", provider=provider, request_sent=sent
    )


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object, or {} when it has none."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def token_set(body: Mapping[str, Any], *, previous_refresh: str | None = None) -> TokenSet:
    """A TokenSet from a token endpoint's JSON (RFC 6749 §5.1)."""
    expires_in = float(body.get("expires_in", 3600))
    scope = body.get("scope") or ""
    return TokenSet(
        access_token=str(body["access_token"]),
        # Google omits refresh_token on refresh (the old one stays valid);
        # Zoom always sends a new one and the old one dies.
        refresh_token=str(body.get("refresh_token") or previous_refresh or "") or None,
        expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
        scopes=tuple(scope.replace(",", " ").split()),
        token_type=str(body.get("token_type", "Bearer")),
    )


class ProviderClient(ABC):
    """One provider's OAuth code flow and meeting API, on one pooled httpx client."""

    provider: ProviderName
    token_auth_method: str = "client_secret_basic"
    # Whether repeating a create whose answer was lost makes no second meeting
    # (Google: client-chosen event id and requestId). Where it would (Zoom), a
    # caller retrying a create that may have reached the provider looks the
    # meeting up with `find_meeting` first.
    idempotent_create: bool = False

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        http: httpx.AsyncClient | None = None,
        observer: RetryObserver | None = None,
        holds: SharedHolds | None = None,
    ) -> None:
        self.settings = settings
        self._pools = [http] if http is not None else http_clients(settings)
        self._owns_http = http is None
        self._turn = itertools.count()
        self.observer = observer
        # Retry-After holds per account, for every call this client makes (_pacing.py).
        # `holds` shares them with the deployment's other processes.
        self.pacer = AccountPacer(provider=self.provider, shared=holds)
        self.policy = RetryPolicy(
            max_attempts=settings.max_attempts,
            max_wait_s=settings.max_retry_wait_s,
            backoff=Backoff(base_s=settings.backoff_base_s, cap_s=settings.backoff_cap_s),
        )

    async def aclose(self) -> None:
        """Close the connection pool if this client made it."""
        if self._owns_http:
            for pool in self._pools:
                await pool.aclose()

    @property
    def _http(self) -> httpx.AsyncClient:
        """The next pool, round robin."""
        return self._pools[next(self._turn) % len(self._pools)]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- what each provider defines -----------------------------------------

    @property
    @abstractmethod
    def client_id(self) -> str: ...

    @property
    @abstractmethod
    def client_secret(self) -> str: ...

    @property
    @abstractmethod
    def authorize_url(self) -> str: ...

    @property
    @abstractmethod
    def token_url(self) -> str: ...

    @property
    @abstractmethod
    def revoke_url(self) -> str: ...

    @property
    @abstractmethod
    def redirect_uri(self) -> str: ...

    @property
    @abstractmethod
    def scopes(self) -> str: ...

    def extra_authorize_params(self) -> dict[str, str]:
        """Provider-specific authorization URL parameters."""
        return {}

    @abstractmethod
    def api_error(self, response: httpx.Response, *, operation: str) -> ProviderError:
        """Translate an API error response into our error tree."""

    @abstractmethod
    async def account(self, access_token: str) -> ProviderAccount:
        """The provider account the token belongs to."""

    @abstractmethod
    async def create_meeting(self, access_token: str, request: MeetingRequest) -> Meeting:
        """Create the meeting for one session (idempotent where the provider allows)."""

    @abstractmethod
    async def find_meeting(self, access_token: str, request: MeetingRequest) -> Meeting | None:
        """The meeting an earlier `create_meeting(request)` made, or None when there is none."""

    @abstractmethod
    async def get_meeting(self, access_token: str, external_id: str) -> Meeting | None:
        """The meeting, or None when it does not exist (any more)."""

    @abstractmethod
    async def delete_meeting(self, access_token: str, external_id: str) -> bool:
        """Delete a meeting; False when it was already gone."""

    # -- OAuth ----------------------------------------------------------------

    def authorization_url(
        self, *, state: str, code_verifier: str, login_hint: str | None = None
    ) -> str:
        """Where to send the tutor: the provider's consent page with PKCE S256."""
        params = self.extra_authorize_params()
        if login_hint:
            params["login_hint"] = login_hint
        return str(
            prepare_grant_uri(
                self.authorize_url,
                client_id=self.client_id,
                response_type="code",
                redirect_uri=self.redirect_uri,
                scope=self.scopes,
                state=state,
                code_challenge=create_s256_code_challenge(code_verifier),
                code_challenge_method="S256",
                **params,
            )
        )

    async def exchange_code(self, code: str, *, code_verifier: str) -> TokenSet:
        """Trade the callback's code (with its PKCE verifier) for tokens."""
        body = prepare_token_request(
            "authorization_code",
            code=code,
            redirect_uri=self.redirect_uri,
            code_verifier=code_verifier,
        )
        response = await self._token_request(body, operation="code exchange")
        if response.status_code >= 400:
            # A bad, used or expired code is the callback's problem, not a revoked grant.
            raise self._token_error(response, operation="code exchange", revoked=False)
        return token_set(json_body(response))

    async def refresh(self, refresh_token: str) -> TokenSet:
        """New tokens from a refresh token; persist the returned refresh token (Zoom rotates it)."""
        body = prepare_token_request("refresh_token", refresh_token=refresh_token)

        async def attempt() -> httpx.Response:
            response = await self._token_request(body, operation="token refresh")
            if response.status_code == 429 or response.status_code >= 500:
                raise self._token_error(response, operation="token refresh", revoked=True)
            return response

        # Retrying a refresh whose answer was lost is safe for Google and, for
        # Zoom, no worse than giving up: the rotated token is lost either way.
        response = await self._retry(attempt, operation="token refresh")
        if response.status_code >= 400:
            raise self._token_error(response, operation="token refresh", revoked=True)
        return token_set(json_body(response), previous_refresh=refresh_token)

    async def revoke(self, token: str) -> None:
        """Revoke a token at the provider (RFC 7009); revoking an unknown token is no error."""
        body, headers = prepare_revoke_token_request(token)
        started = time.perf_counter()
        try:
            response = await self._http.post(
                self.revoke_url, content=body, headers=headers, auth=self._client_auth()
            )
        except httpx.TransportError as exc:
            self._observe("revoke", None, started)
            raise transport_error(exc, provider=self.provider, operation="revoke") from exc
        self._observe("revoke", response.status_code, started)
        if response.status_code >= 500 or response.status_code == 429:
            raise self._token_error(response, operation="revoke", revoked=False)

    def _client_auth(self) -> httpx.Auth:
        if self.token_auth_method == "client_secret_basic":
            return httpx.BasicAuth(self.client_id, self.client_secret)
        # client_secret_post: the credentials ride in the form body instead.
        return httpx.Auth()

    async def _token_request(self, body: str, *, operation: str) -> httpx.Response:
        if self.token_auth_method == "client_secret_post":
            body += "&" + str(
                httpx.QueryParams(client_id=self.client_id, client_secret=self.client_secret)
            )
        started = time.perf_counter()
        with self._span(operation, "POST") as span:
            try:
                response = await self._http.post(
                    self.token_url,
                    content=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                    auth=self._client_auth(),
                )
            except httpx.TransportError as exc:
                self._observe(operation, None, started)
                raise transport_error(exc, provider=self.provider, operation=operation) from exc
            span.set_attribute("http.response.status_code", response.status_code)
        self._observe(operation, response.status_code, started)
        return response

    def _span(self, operation: str, method: str) -> AbstractContextManager[tracing.Span]:
        """The span of one provider call (its retries inside), in the caller's trace."""
        return tracing.span(
            f"{self.provider} {operation}",
            kind=tracing.SpanKind.CLIENT,
            attributes={
                "relink.provider": self.provider,
                "relink.operation": operation,
                "http.request.method": method,
            },
        )

    def _observe(self, operation: str, status: int | None, started: float) -> None:
        """One provider HTTP call in relink_provider_request_seconds (and 429s counted)."""
        metrics.PROVIDER_REQUEST_SECONDS.labels(
            provider=self.provider,
            operation=operation,
            status="transport_error" if status is None else str(status),
        ).observe(time.perf_counter() - started)
        if status == 429:
            metrics.PROVIDER_RATE_LIMITED.labels(provider=self.provider, operation=operation).inc()

    def _token_error(
        self, response: httpx.Response, *, operation: str, revoked: bool
    ) -> ProviderError:
        """Translate a token endpoint error (RFC 6749 §5.2 plus Zoom's `reason`)."""
        body = json_body(response)
        status = response.status_code
        code = str(body.get("error") or body.get("code") or status)
        text = str(body.get("error_description") or body.get("reason") or body.get("message") or "")
        message = f"{operation} refused" + (f": {text}" if text else "")
        if status == 429:
            wait = retry_after_from_headers(response.headers)
            return RateLimitedError(message, provider=self.provider, code=code, retry_after_s=wait)
        if status >= 500:
            return ProviderUnavailableError(
                message, provider=self.provider, status=status, code=code
            )
        # invalid_grant: Google's revoked/expired refresh token, and Zoom's
        # {"reason": "Invalid Token!", "error": "invalid_grant"} for a dead
        # (rotated, revoked or superseded) one (older Zoom: invalid_request).
        # Zoom's numbered OAuth errors (Zoom "OAuth error messages"): 4711
        # refresh token scopes no longer match the app's, 4735 the token's owner
        # does not exist, 4741 the token has been revoked. Only a new consent helps.
        if revoked and code in REVOKED_TOKEN_CODES:
            return AuthorizationRevokedError(
                message, provider=self.provider, status=status, code=code
            )
        return InvalidRequestError(message, provider=self.provider, status=status, code=code)

    # -- API calls ------------------------------------------------------------

    async def _retry(
        self, call: Callable[[], Awaitable[T]], *, operation: str, idempotent: bool = True
    ) -> T:
        return await call_with_retry(
            call,
            operation=f"{self.provider} {operation}",
            policy=self.policy,
            idempotent=idempotent,
            observer=self.observer,
        )

    async def api_call(
        self,
        method: str,
        url: str,
        *,
        access_token: str,
        operation: str,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        idempotent: bool = True,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One API call with retries; an error status (not in `accept`) becomes a ProviderError.

        Paced per account: no request goes out while a Retry-After the account
        was given (by this call or any other) has not passed.
        """
        account = current_account()

        async def attempt() -> httpx.Response:
            if account is not None:
                await self.pacer.wait(
                    account, max_wait_s=self.policy.max_wait_s, provider=self.provider
                )
            started = time.perf_counter()
            try:
                response = await self._http.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    headers={"Authorization": f"Bearer {access_token}"},
                )
            except httpx.TransportError as exc:
                self._observe(operation, None, started)
                raise transport_error(exc, provider=self.provider, operation=operation) from exc
            self._observe(operation, response.status_code, started)
            if response.status_code >= 400 and response.status_code not in accept:
                error = self.api_error(response, operation=operation)
                if (
                    account is not None
                    and isinstance(error, RateLimitedError)
                    and error.retry_after_s is not None
                ):
                    # The wait is the account's: every call for it waits, not only this one.
                    await self.pacer.record(account, error.retry_after_s)
                raise error
            return response

        with self._span(operation, method):
            return await self._retry(attempt, operation=operation, idempotent=idempotent)
