"""Async clients for Zoom and Google Meet behind one interface (see README.md)."""

from __future__ import annotations

from services.providers.base import ProviderClient, new_pkce_verifier
from services.providers.clients import build_client
from services.providers.google import GoogleMeetClient
from services.providers.models import (
    Meeting,
    MeetingRequest,
    ProviderAccount,
    ProviderName,
    TokenSet,
)
from services.providers.retry import RetryNotice, RetryPolicy
from services.providers.session import AuthorizedSession
from services.providers.settings import ProviderSettings
from services.providers.zoom import ZoomClient

__all__ = [
    "AuthorizedSession",
    "GoogleMeetClient",
    "Meeting",
    "MeetingRequest",
    "ProviderAccount",
    "ProviderClient",
    "ProviderName",
    "ProviderSettings",
    "RetryNotice",
    "RetryPolicy",
    "TokenSet",
    "ZoomClient",
    "build_client",
    "new_pkce_verifier",
]
