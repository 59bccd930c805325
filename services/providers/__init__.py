"""Async clients for Zoom and Google Meet behind one interface (see README.md).

This package root is the providers' only public surface: callers import from
`services.providers`, never from its `_`-prefixed modules (an import contract
in pyproject.toml's [tool.importlinter] says so).
"""

from __future__ import annotations

from services.core.backoff import RetryPolicy
from services.providers._base import ProviderClient, new_pkce_verifier
from services.providers._clients import build_client
from services.providers._errors import (
    AuthorizationRevokedError,
    ConferenceFailedError,
    ConferencePendingError,
    DailyQuotaExhaustedError,
    HeldBackError,
    InvalidRequestError,
    MeetingNotFoundError,
    NoJoinLinkError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    RetryableProviderError,
    TokenExpiredError,
    UsageLimitedError,
)
from services.providers._google import GoogleMeetClient
from services.providers._google_watch import WatchChannel, watch_events
from services.providers._models import (
    Meeting,
    MeetingRequest,
    ProviderAccount,
    ProviderName,
    TokenSet,
    meeting_marker,
)
from services.providers._pacing import SharedHolds, calls_for
from services.providers._retry import RetryNotice
from services.providers._session import AuthorizedSession
from services.providers._settings import (
    DEV_GOOGLE_CLIENT_ID,
    DEV_GOOGLE_CLIENT_SECRET,
    DEV_ZOOM_CLIENT_ID,
    DEV_ZOOM_CLIENT_SECRET,
    GOOGLE_SCOPES,
    ZOOM_SCOPES,
    ProviderSettings,
)
from services.providers._zoom import ZoomClient

__all__ = [
    "DEV_GOOGLE_CLIENT_ID",
    "DEV_GOOGLE_CLIENT_SECRET",
    "DEV_ZOOM_CLIENT_ID",
    "DEV_ZOOM_CLIENT_SECRET",
    "GOOGLE_SCOPES",
    "ZOOM_SCOPES",
    "AuthorizationRevokedError",
    "AuthorizedSession",
    "ConferenceFailedError",
    "ConferencePendingError",
    "DailyQuotaExhaustedError",
    "GoogleMeetClient",
    "HeldBackError",
    "InvalidRequestError",
    "Meeting",
    "MeetingNotFoundError",
    "MeetingRequest",
    "NoJoinLinkError",
    "ProviderAccount",
    "ProviderClient",
    "ProviderError",
    "ProviderName",
    "ProviderSettings",
    "ProviderUnavailableError",
    "RateLimitedError",
    "RetryNotice",
    "RetryPolicy",
    "RetryableProviderError",
    "SharedHolds",
    "TokenExpiredError",
    "TokenSet",
    "UsageLimitedError",
    "WatchChannel",
    "ZoomClient",
    "build_client",
    "calls_for",
    "meeting_marker",
    "new_pkce_verifier",
    "watch_events",
]
