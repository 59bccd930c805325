"""Settings of the provider simulator (`relink provider-sim`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.oauth_gateway.settings import DEV_ZOOM_WEBHOOK_SECRET_TOKEN
from services.providers import (
    DEV_GOOGLE_CLIENT_ID,
    DEV_GOOGLE_CLIENT_SECRET,
    DEV_ZOOM_CLIENT_ID,
    DEV_ZOOM_CLIENT_SECRET,
)


class ProviderSimSettings(BaseSettings):
    """Where the simulator listens, which app credentials it accepts, its default behaviour."""

    model_config = SettingsConfigDict(env_prefix="RELINK_PROVIDER_SIM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=18090, ge=0, le=65535)
    zoom_client_id: str = DEV_ZOOM_CLIENT_ID
    zoom_client_secret: str = DEV_ZOOM_CLIENT_SECRET
    google_client_id: str = DEV_GOOGLE_CLIENT_ID
    google_client_secret: str = DEV_GOOGLE_CLIENT_SECRET
    # Redirect URIs the consent page accepts, by prefix (the real providers want
    # them registered exactly; a local stand-in accepts any loopback callback).
    redirect_uri_prefixes: tuple[str, ...] = ("http://127.0.0.1", "http://localhost")
    # Zoom and Google both issue access tokens valid for one hour (expires_in 3599/3600).
    token_ttl_s: int = Field(default=3600, ge=1)
    # Authorization codes: Google's live ~10 minutes; Zoom's are single-use too.
    code_ttl_s: int = Field(default=600, ge=1)
    # Zoom OAuth docs: "The authorization code is valid for five minutes."
    zoom_code_ttl_s: int = Field(default=300, ge=1)
    # Zoom: 100 meeting create/update requests per user per day (see ratelimit.py).
    zoom_daily_meeting_cap: int = Field(default=100, ge=0)
    # Zoom's event notification endpoint of relink's app (the gateway's
    # /webhooks/zoom) and the app's secret token; unset: no notifications sent.
    zoom_webhook_url: str | None = None
    zoom_webhook_secret_token: str = DEV_ZOOM_WEBHOOK_SECRET_TOKEN
    zoom_webhook_attempts: int = Field(default=4, ge=1)
    zoom_webhook_retry_s: float = Field(default=0.5, ge=0)
    # How many reads (insert answer included) a new Meet conference stays "pending".
    google_conference_pending_reads: int = Field(default=1, ge=0)
    seed: int = 0
    # Where the simulated world is kept across restarts (persistence.py); unset:
    # in memory only. `relink run` sets it under the devstack home.
    state_file: Path | None = None
    # How long after a burst of requests the state is saved (one save per burst).
    state_save_delay_s: float = Field(default=0.25, gt=0)
    log_level: str = "warning"
