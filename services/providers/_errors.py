"""Errors the provider clients raise, translated at the boundary from httpx and Authlib.

    ProviderError                     a Zoom / Google call failed; `.provider` says which
    ├── RetryableProviderError        worth retrying later, as is
    │   ├── RateLimitedError          429 / rate-limit 403; `.retry_after_s` is the wait asked for
    │   │   └── HeldBackError         not sent: the account's earlier Retry-After has not passed
    │   ├── ProviderUnavailableError  5xx, timeout, connection failure: back off and retry
    │   │   └── ConferencePendingError   Google still building the Meet link after our polls
    │   └── UsageLimitedError         Google's "Calendar usage limits exceeded": no reset time
    │                                 given; back off (minutes, then hours), not retried in place
    ├── DailyQuotaExhaustedError      a per-day cap is spent; `.resets_at` says when to resume
    ├── TokenExpiredError             the access token is no longer accepted: refresh, retry once
    ├── AuthorizationRevokedError     the grant is revoked or expired: the tutor must reconnect
    ├── ConferenceFailedError         Google could not create the Meet conference
    └── InvalidRequestError           the provider refused what we sent: do not retry
        ├── MeetingNotFoundError      the meeting / event does not exist (404 / 410)
        └── NoJoinLinkError           the meeting came back without a join link

Messages carry the provider's own error code and text, never a token: tokens
travel only in headers and form bodies, which no error here ever copies.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from services.core.errors import RelinkError


class ErrorContext(TypedDict):
    """Where an error came from, as the translators pass it along."""

    provider: str
    status: int | None
    code: str | None


class ProviderError(RelinkError):
    """Base of every error a provider client raises."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        self.code = code

    def __str__(self) -> str:
        where = f"{self.provider}" + (f" HTTP {self.status}" if self.status else "")
        code = f" [{self.code}]" if self.code else ""
        return f"{where}{code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class RetryableProviderError(ProviderError):
    """The same request may succeed later."""

    retryable = True


class RateLimitedError(RetryableProviderError):
    """The provider throttled us; wait `retry_after_s` (None when it did not say)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = 429,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status, code=code)
        self.retry_after_s = retry_after_s


class HeldBackError(RateLimitedError):
    """Not sent: an earlier 429's Retry-After for this account has not passed (`_pacing.py`).

    `retry_after_s` is the time left. Whoever got that 429 already handled
    it (e.g. the migrator paused the switch); this call just waits its turn.
    """

    def __init__(self, message: str, *, provider: str, retry_after_s: float) -> None:
        super().__init__(
            message, provider=provider, status=None, code="held_back", retry_after_s=retry_after_s
        )


class ProviderUnavailableError(RetryableProviderError):
    """5xx, timeout or connection failure; `request_sent` is False when it surely never arrived."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        code: str | None = None,
        request_sent: bool = True,
    ) -> None:
        super().__init__(message, provider=provider, status=status, code=code)
        self.request_sent = request_sent


class ConferencePendingError(ProviderUnavailableError):
    """Google kept the conference `pending` for longer than we polled."""


class UsageLimitedError(RetryableProviderError):
    """Google's 403 `quotaExceeded` "Calendar usage limits exceeded.".

    A per-user Calendar limit against abuse, not a daily API quota: Google
    gives no reset time (users "should be able to edit their calendars
    normally again within several hours", Google Workspace Admin Help "Avoid
    Calendar use limits") and its error guide asks for exponential backoff.
    Retrying within seconds cannot help, so the client raises it at once and
    the caller waits longer each time.
    """


class DailyQuotaExhaustedError(ProviderError):
    """A per-day cap is spent; nothing succeeds before `resets_at`."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        resets_at: datetime,
        status: int | None = 429,
        code: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status, code=code)
        self.resets_at = resets_at


class TokenExpiredError(ProviderError):
    """The access token was refused; refresh it and retry once."""


class AuthorizationRevokedError(ProviderError):
    """The refresh token is revoked or expired; the tutor must connect again."""


class ConferenceFailedError(ProviderError):
    """Google reported the conference create request as `failure`."""


class InvalidRequestError(ProviderError):
    """The provider rejected the request itself; retrying it unchanged cannot help."""


class MeetingNotFoundError(InvalidRequestError):
    """The meeting or calendar event does not exist."""


class NoJoinLinkError(InvalidRequestError):
    """The provider made the meeting without a join link (a Meet event with no conferenceData)."""
