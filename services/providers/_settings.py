"""Settings of the provider clients: where Zoom and Google are, which app we are, timeouts.

Defaults point at the provider simulator of the devstack (127.0.0.1:18090);
production sets the real endpoints (listed in services/providers/README.md).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.errors import ConfigurationError

SIM = "http://127.0.0.1:18090"
GATEWAY = "http://127.0.0.1:18000"

# The credentials the simulator accepts by default (devtools/provider_sim/settings.py).
DEV_ZOOM_CLIENT_ID = "relink-dev-zoom"
DEV_ZOOM_CLIENT_SECRET = "relink-dev-zoom-secret"
DEV_GOOGLE_CLIENT_ID = "relink-dev-google.apps.googleusercontent.com"
DEV_GOOGLE_CLIENT_SECRET = "relink-dev-google-secret"

# Where the simulator mounts each provider (provider_sim/zoom_api.py, google_api.py); a
# real provider's endpoint never has this path.
SIM_MOUNTS = ("/zoom", "/google")
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
ENDPOINT_SETTINGS = {
    "zoom_auth_base": "RELINK_ZOOM_AUTH_BASE",
    "zoom_api_base": "RELINK_ZOOM_API_BASE",
    "google_auth_base": "RELINK_GOOGLE_AUTH_BASE",
    "google_token_base": "RELINK_GOOGLE_TOKEN_BASE",
    "google_api_base": "RELINK_GOOGLE_API_BASE",
}


def simulator_like(url: str) -> str | None:
    """Why `url` cannot be a real provider endpoint (None when it may be one).

    Zoom's and Google's endpoints are public HTTPS hosts (services/providers/
    README.md); loopback, plain HTTP, or the simulator's mount paths all mean
    the setting still points at the devstack's simulator.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        return "has no host"
    try:
        if ipaddress.ip_address(host).is_loopback or ipaddress.ip_address(host).is_unspecified:
            return f"is a loopback address ({host})"
    except ValueError:
        if host in LOOPBACK_NAMES or host.endswith(".localhost"):
            return f"is a loopback address ({host})"
    if parts.scheme != "https":
        return "is not https"
    if any(parts.path == m or parts.path.startswith(f"{m}/") for m in SIM_MOUNTS):
        return f"has the simulator's path ({parts.path})"
    return None


# Calendar scope that lets us insert/delete events; openid+email give the account.
GOOGLE_SCOPES = "openid email https://www.googleapis.com/auth/calendar.events"
# Zoom granular scopes for a General app (Zoom "OAuth scopes" docs), one per
# call relink makes: create, get, list (the migrator's in-flight dedupe lists
# the tutor's meetings on every retried or re-claimed row), delete, and the
# user's own profile. Without list, a first transient error would fail every
# later session of the switch with 4711, and reconnecting could not help.
ZOOM_SCOPES = (
    "meeting:write:meeting meeting:read:meeting meeting:read:list_meetings "
    "meeting:delete:meeting user:read:user"
)


class ProviderSettings(BaseSettings):
    """Zoom and Google endpoints, app credentials, redirect URIs, timeouts and retry limits."""

    model_config = SettingsConfigDict(env_prefix="RELINK_", extra="ignore", populate_by_name=True)

    dev_mode: bool = Field(default=True, alias="RELINK_DEV_MODE")

    zoom_client_id: str = DEV_ZOOM_CLIENT_ID
    zoom_client_secret: SecretStr = SecretStr(DEV_ZOOM_CLIENT_SECRET)
    # Real: https://zoom.us (authorize, token and revoke live under /oauth/).
    zoom_auth_base: str = f"{SIM}/zoom"
    # Real: https://api.zoom.us/v2
    zoom_api_base: str = f"{SIM}/zoom/v2"
    zoom_redirect_uri: str = f"{GATEWAY}/oauth/zoom/callback"
    zoom_scopes: str = ZOOM_SCOPES
    # A Zoom tracking field to label relink's meetings with, for Zoom's reports.
    # Zoom accepts only fields the account's admin defined, so none by default.
    zoom_tracking_field: str | None = None

    google_client_id: str = DEV_GOOGLE_CLIENT_ID
    google_client_secret: SecretStr = SecretStr(DEV_GOOGLE_CLIENT_SECRET)
    # Real: https://accounts.google.com (authorize at /o/oauth2/v2/auth).
    google_auth_base: str = f"{SIM}/google"
    # Real: https://oauth2.googleapis.com (/token and /revoke).
    google_token_base: str = f"{SIM}/google"
    # Real: https://www.googleapis.com (/calendar/v3 and /oauth2/v3/userinfo).
    google_api_base: str = f"{SIM}/google"
    google_redirect_uri: str = f"{GATEWAY}/oauth/google_meet/callback"
    google_scopes: str = GOOGLE_SCOPES

    connect_timeout_s: float = Field(default=5.0, gt=0, alias="RELINK_PROVIDER_CONNECT_TIMEOUT_S")
    read_timeout_s: float = Field(default=20.0, gt=0, alias="RELINK_PROVIDER_READ_TIMEOUT_S")
    pool_timeout_s: float = Field(default=30.0, gt=0, alias="RELINK_PROVIDER_POOL_TIMEOUT_S")
    max_connections: int = Field(default=200, ge=1, alias="RELINK_PROVIDER_MAX_CONNECTIONS")
    # Connections per pool; max_connections is split over ceil(max/size) pools (see base.py).
    pool_shard_size: int = Field(default=8, ge=1, alias="RELINK_PROVIDER_POOL_SHARD_SIZE")
    max_attempts: int = Field(default=5, ge=1, alias="RELINK_PROVIDER_MAX_ATTEMPTS")
    max_retry_wait_s: float = Field(default=60.0, ge=0, alias="RELINK_PROVIDER_MAX_RETRY_WAIT_S")
    backoff_base_s: float = Field(default=0.2, gt=0, alias="RELINK_PROVIDER_BACKOFF_BASE_S")
    backoff_cap_s: float = Field(default=10.0, gt=0, alias="RELINK_PROVIDER_BACKOFF_CAP_S")
    # Google builds the Meet conference asynchronously; how often and how long we poll:
    # the first re-read soon (it is usually ready by then), then doubling up to the interval.
    conference_poll_first_s: float = Field(
        default=0.1, gt=0, alias="RELINK_GOOGLE_CONFERENCE_POLL_FIRST_S"
    )
    conference_poll_interval_s: float = Field(
        default=0.5, gt=0, alias="RELINK_GOOGLE_CONFERENCE_POLL_INTERVAL_S"
    )
    conference_poll_attempts: int = Field(
        default=20, ge=1, alias="RELINK_GOOGLE_CONFERENCE_POLL_ATTEMPTS"
    )

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> ProviderSettings:
        if self.dev_mode:
            return self
        dev_secrets = {DEV_ZOOM_CLIENT_SECRET, DEV_GOOGLE_CLIENT_SECRET}
        used = {
            self.zoom_client_secret.get_secret_value(),
            self.google_client_secret.get_secret_value(),
        }
        if used & dev_secrets:
            raise ConfigurationError(
                "RELINK_ZOOM_CLIENT_SECRET / RELINK_GOOGLE_CLIENT_SECRET still hold the "
                "simulator's dev secrets while RELINK_DEV_MODE is false"
            )
        return self

    @model_validator(mode="after")
    def _refuse_simulator_endpoints_in_production(self) -> ProviderSettings:
        # Production talking to the simulator would "work" (the sim answers
        # everything) while no tutor's meeting exists anywhere real.
        if self.dev_mode:
            return self
        wrong = [
            f"{env}={getattr(self, field)} {why}"
            for field, env in ENDPOINT_SETTINGS.items()
            if (why := simulator_like(getattr(self, field)))
        ]
        if wrong:
            raise ConfigurationError(
                "RELINK_DEV_MODE is false but provider endpoints still point at the simulator: "
                + "; ".join(wrong)
                + " (set the real Zoom/Google endpoints, see README 'Going live')"
            )
        return self
