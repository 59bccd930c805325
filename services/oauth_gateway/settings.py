"""Settings of the OAuth gateway (`relink gateway`), from `RELINK_GATEWAY_*` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from services.core.errors import ConfigurationError
from services.core.settings import DEVSTACK_GATEWAY_PORT, CommonSettings

# Public by design so the devstack signs people in with no setup; refused outside dev mode.
DEV_SESSION_SECRET = "relink-dev-session-secret-not-for-production-use"
MIN_SECRET_LENGTH = 32
# The secret token of the simulator's Zoom app (devtools/provider_sim): public, dev mode only.
DEV_ZOOM_WEBHOOK_SECRET_TOKEN = "relink-dev-zoom-webhook-secret-token"


class GatewaySettings(CommonSettings):
    """Where the gateway listens, how it signs people in, its time limits."""

    host: str = Field(default="127.0.0.1", alias="RELINK_GATEWAY_HOST")
    port: int = Field(default=DEVSTACK_GATEWAY_PORT, ge=0, le=65535, alias="RELINK_GATEWAY_PORT")
    # What browsers and providers see; the OAuth redirect URIs must live under it.
    public_base_url: str = Field(
        default=f"http://127.0.0.1:{DEVSTACK_GATEWAY_PORT}", alias="RELINK_GATEWAY_PUBLIC_BASE_URL"
    )
    # HMAC-SHA256 key of the platform's sign-in tokens (cookie or bearer).
    session_secret: SecretStr = Field(
        default=SecretStr(""), alias="RELINK_GATEWAY_SESSION_SECRET", repr=False
    )
    session_cookie: str = Field(default="relink_session", alias="RELINK_GATEWAY_SESSION_COOKIE")
    # Lifetime of the tokens the dev sign-in page issues.
    session_ttl_s: int = Field(default=8 * 3600, gt=0, alias="RELINK_GATEWAY_SESSION_TTL_S")
    # OAuth `state` lifetime: long enough to read a consent page, short enough to be useless later.
    state_ttl_s: int = Field(default=600, gt=0, le=3600, alias="RELINK_GATEWAY_STATE_TTL_S")
    # How long after a switch the tutor may roll back (the old meetings are kept that long).
    rollback_grace_s: int = Field(default=24 * 3600, ge=0, alias="RELINK_GATEWAY_ROLLBACK_GRACE_S")
    db_pool_size: int = Field(default=10, ge=1, le=200, alias="RELINK_GATEWAY_DB_POOL_SIZE")
    workers: int = Field(default=1, ge=1, le=64, alias="RELINK_GATEWAY_WORKERS")
    access_log: bool = Field(default=False, alias="RELINK_GATEWAY_ACCESS_LOG")
    # Bodies here are small (a booking, a form, a Zoom webhook): refuse big ones unread.
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, le=16 * 1024 * 1024, alias="RELINK_GATEWAY_MAX_BODY_BYTES"
    )
    max_url_bytes: int = Field(default=8192, ge=256, le=65536, alias="RELINK_GATEWAY_MAX_URL_BYTES")
    # /docs and /openapi.json: on in dev mode, off elsewhere unless asked for.
    expose_docs: bool | None = Field(default=None, alias="RELINK_GATEWAY_EXPOSE_DOCS")
    # /metrics on the public port (put it behind the proxy's allow-list, or turn it off).
    expose_metrics: bool = Field(default=True, alias="RELINK_GATEWAY_EXPOSE_METRICS")
    # With RELINK_GATEWAY_WORKERS > 1: where the workers' metric files go (emptied at
    # start; PROMETHEUS_MULTIPROC_DIR wins; unset: a fresh temporary folder).
    metrics_dir: Path | None = Field(default=None, alias="RELINK_GATEWAY_METRICS_DIR")
    # How often the video-setup page polls the progress endpoint.
    progress_poll_ms: int = Field(default=1000, ge=100, alias="RELINK_GATEWAY_PROGRESS_POLL_MS")
    # How many times a booking re-creates its meeting when a switch commits meanwhile.
    booking_attempts: int = Field(default=3, ge=1, le=10, alias="RELINK_GATEWAY_BOOKING_ATTEMPTS")
    # The Zoom app's "Secret Token" (Marketplace > Features > Access): Zoom signs
    # every event notification with it (x-zm-signature) and we answer its
    # endpoint.url_validation challenge with it.
    zoom_webhook_secret_token: SecretStr = Field(
        default=SecretStr(""), alias="RELINK_ZOOM_WEBHOOK_SECRET_TOKEN", repr=False
    )
    # How far x-zm-request-timestamp may be from our clock: older notifications
    # are refused as stale (a replay window), as Zoom's docs advise checking.
    # Lifetime asked for a Google Calendar push channel (events.watch `ttl`).
    google_watch_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=60, alias="RELINK_GATEWAY_GOOGLE_WATCH_TTL_S"
    )
    webhook_max_skew_s: int = Field(
        default=300, ge=1, le=3600, alias="RELINK_GATEWAY_WEBHOOK_MAX_SKEW_S"
    )

    @model_validator(mode="after")
    def _refuse_dev_session_secret(self) -> GatewaySettings:
        secret = self.session_secret.get_secret_value()
        if not secret:
            if not self.dev_mode:
                raise ConfigurationError(
                    "RELINK_GATEWAY_SESSION_SECRET is required outside dev mode"
                )
            self.session_secret = SecretStr(DEV_SESSION_SECRET)
        elif not self.dev_mode and secret == DEV_SESSION_SECRET:
            raise ConfigurationError(
                "the public dev session secret must not be used outside dev mode"
            )
        elif len(secret) < MIN_SECRET_LENGTH:
            raise ConfigurationError(
                f"RELINK_GATEWAY_SESSION_SECRET must be at least {MIN_SECRET_LENGTH} characters"
            )
        self.public_base_url = self.public_base_url.rstrip("/")
        self._refuse_dev_webhook_secret()
        return self

    def _refuse_dev_webhook_secret(self) -> None:
        # Outside dev mode an empty token leaves the Zoom event endpoint closed
        # (every notification refused with 503): a Google-only deployment needs
        # none, and a forged notification must never be accepted for lack of a key.
        token = self.zoom_webhook_secret_token.get_secret_value()
        if not token:
            if self.dev_mode:
                self.zoom_webhook_secret_token = SecretStr(DEV_ZOOM_WEBHOOK_SECRET_TOKEN)
        elif not self.dev_mode and token == DEV_ZOOM_WEBHOOK_SECRET_TOKEN:
            raise ConfigurationError(
                "the public dev Zoom webhook secret token must not be used outside dev mode"
            )

    @property
    def secure_cookies(self) -> bool:
        """Cookies marked Secure whenever the public URL is https."""
        return self.public_base_url.startswith("https://")

    def redirect_uri(self, provider: str) -> str:
        """The exact callback URL registered at the provider."""
        return f"{self.public_base_url}/oauth/{provider}/callback"
