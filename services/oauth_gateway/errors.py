"""What the gateway refuses, and why; routes map each to a page or an HTTP status.

GatewayError                    base of the gateway's errors
├── NotSignedIn                 no valid platform token: 401, sign in again
├── Forbidden                   signed in, but not allowed (wrong role, dev page off): 403
├── NotFound                    no such switch / user for this caller: 404
├── OAuthRejected               a callback refused, nothing written; `.reason` is a short code
│   ├── StateRejected           unknown, expired, replayed, other tutor's or other provider's state
│   ├── ConsentDenied           the tutor declined at the provider (error=access_denied)
│   ├── ScopesMissing           the tutor unticked a permission relink needs; `.missing` names it
│   ├── TokenExchangeFailed     the provider refused the code exchange (or the account call)
│   └── ProviderUnavailable     the provider is down or throttling at the exchange: 503
├── Conflict                    the request clashes with the current state: 409
│   ├── NoConnection            the tutor has no video provider connected yet
│   ├── ConnectionUnreadable    the stored tokens do not decrypt here: connect again
│   ├── RollbackNotAllowed      not the latest switch, grace period over, or nothing to restore
│   └── NothingToRetry          the switch has no failed sessions (or was superseded)
├── InvalidRequest              the request does not have the operation's shape: 422
├── BookingInvalid              a booking that cannot be made as asked (starts in the past): 422
└── BookingFailed               the meeting could not be created at the provider: 502
    └── BookingThrottled        the provider asked this tutor's account to wait: 503, Retry-After

NotificationRefused (ValueError) a provider notification not provably the provider's (unsigned,
                                 forged, stale, unknown channel) or malformed: nothing is done with
                                 it; `.reason` is a short code the webhook routes map to 400/401/503
"""

from __future__ import annotations

from services.core.errors import RelinkError


class GatewayError(RelinkError):
    """Base of the gateway's errors."""


class NotSignedIn(GatewayError):
    """No valid platform-signed token came with the request."""


class Forbidden(GatewayError):
    """The caller is signed in but may not do this."""


class NotFound(GatewayError):
    """The thing asked for does not exist for this caller."""


class OAuthRejected(GatewayError):
    """An OAuth callback that was refused; nothing was written."""

    reason = "rejected"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class StateRejected(OAuthRejected):
    """The `state` is unknown, expired, used, or bound to someone or something else."""

    reason = "bad_state"


class ConsentDenied(OAuthRejected):
    """The tutor declined access at the provider."""

    reason = "access_denied"


class ScopesMissing(OAuthRejected):
    """The provider granted fewer permissions than relink needs (granular consent)."""

    reason = "scopes_missing"

    def __init__(self, message: str, *, provider: str, missing: tuple[str, ...]) -> None:
        super().__init__(message)
        self.provider = provider
        self.missing = missing

    @property
    def retry_url(self) -> str:
        """Where the tutor starts over (a fresh state, the consent screen again)."""
        return f"/oauth/{self.provider}/start"


class TokenExchangeFailed(OAuthRejected):
    """The provider did not give us tokens for the code."""

    reason = "token_exchange_failed"


class ProviderUnavailable(OAuthRejected):
    """The provider is down or throttling at the code exchange: try again later (503)."""

    reason = "provider_unavailable"


class Conflict(GatewayError):
    """The request clashes with the current state."""


class NoConnection(Conflict):
    """The tutor has no video provider connected."""


class ConnectionUnreadable(Conflict):
    """The stored connection's tokens do not decrypt here; connecting again fixes it."""

    reason = "reconnect_required"


class RollbackNotAllowed(Conflict):
    """This switch cannot be rolled back (any more)."""


class NothingToRetry(Conflict):
    """This switch has no failed sessions to retry."""


class InvalidRequest(GatewayError):
    """The request does not have the shape the operation takes; nothing was done."""

    reason = "invalid_request"


class BookingInvalid(GatewayError):
    """The booking cannot be made as asked (its start is past); nothing was done."""

    reason = "invalid_booking"


class BookingFailed(GatewayError):
    """The meeting for a booking could not be created at the provider."""


class BookingThrottled(BookingFailed):
    """The provider rate-limits the tutor's account (a 429, here or in another process).

    Nothing was made; `retry_after_s` is when to try again (the answer's Retry-After).
    """

    reason = "provider_throttled"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotificationRefused(ValueError):
    """A notification that is not from Zoom, or not any more: nothing is done with it."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
