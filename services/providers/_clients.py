"""Building the client for a provider name: the one place that composes them."""

from __future__ import annotations

import httpx

from services.providers._base import ProviderClient
from services.providers._google import GoogleMeetClient
from services.providers._models import ProviderName
from services.providers._pacing import SharedHolds
from services.providers._retry import RetryObserver
from services.providers._settings import ProviderSettings
from services.providers._zoom import ZoomClient


def build_client(
    provider: ProviderName,
    *,
    settings: ProviderSettings | None = None,
    http: httpx.AsyncClient | None = None,
    observer: RetryObserver | None = None,
    holds: SharedHolds | None = None,
) -> ProviderClient:
    """The client for `provider`, with settings from the environment unless given.

    `holds` shares each 429's Retry-After with the deployment's other processes.
    """
    settings = settings or ProviderSettings()
    if provider == "zoom":
        return ZoomClient(settings, http=http, observer=observer, holds=holds)
    if provider == "google_meet":
        return GoogleMeetClient(settings, http=http, observer=observer, holds=holds)
    raise ValueError(f"unknown provider {provider!r}")
