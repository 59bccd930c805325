"""`WebhooksSettings`: the dispatcher's environment variables (documented in README.md)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from services.core.settings import CommonSettings

# Standard Webhooks' recommended schedule (the spec's "Retry schedule", after Svix):
# immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h -- about 27.5 hours in all.
STANDARD_SCHEDULE_S = "5,300,1800,7200,18000,36000,36000"


class WebhooksSettings(CommonSettings):
    """How to consume, how to send, how long to keep trying, when to give up on an endpoint."""

    group_id: str = Field(default="relink-webhooks", alias="RELINK_WEBHOOKS_GROUP_ID")
    # Prometheus `/metrics` on this port (0 = no endpoint); `relink run` gives each
    # process its own, next to the gateway's.
    metrics_port: int = Field(default=0, ge=0, le=65535, alias="RELINK_WEBHOOKS_METRICS_PORT")
    metrics_host: str = Field(default="127.0.0.1", alias="RELINK_WEBHOOKS_METRICS_HOST")
    session_timeout_s: float = Field(
        default=45.0, ge=6.0, le=300.0, alias="RELINK_WEBHOOKS_SESSION_TIMEOUT_S"
    )
    batch_size: int = Field(default=500, ge=1, le=100_000, alias="RELINK_WEBHOOKS_BATCH_SIZE")
    poll_timeout_s: float = Field(default=0.5, gt=0, alias="RELINK_WEBHOOKS_POLL_TIMEOUT_S")
    # Deliveries sent per turn of the loop before going back to Kafka.
    send_burst: int = Field(default=50, ge=1, alias="RELINK_WEBHOOKS_SEND_BURST")
    # Seconds to wait after each failed attempt; one more attempt than entries.
    retry_schedule_s: str = Field(
        default=STANDARD_SCHEDULE_S, alias="RELINK_WEBHOOKS_RETRY_SCHEDULE_S"
    )
    # The whole HTTP exchange of one attempt (connect, send, answer).
    timeout_s: float = Field(default=15.0, gt=0, alias="RELINK_WEBHOOKS_TIMEOUT_S")
    # The consumer's max.poll.interval.ms: a dispatcher that does not poll for this
    # long loses its partitions. Each turn of sending stops starting attempts after
    # half of it less one timeout (`send_budget_s`), so slow endpoints never cause that.
    max_poll_interval_s: float = Field(
        default=300.0, ge=6.0, alias="RELINK_WEBHOOKS_MAX_POLL_INTERVAL_S"
    )
    # An endpoint is disabled once this many attempts in a row failed AND the
    # first of them is this old (Svix: every attempt failing for 5 days).
    disable_after_failures: int = Field(
        default=20, ge=1, alias="RELINK_WEBHOOKS_DISABLE_AFTER_FAILURES"
    )
    disable_after_s: float = Field(
        default=5 * 86400.0, ge=0, alias="RELINK_WEBHOOKS_DISABLE_AFTER_S"
    )

    @field_validator("retry_schedule_s")
    @classmethod
    def _schedule_is_seconds(cls, value: str) -> str:
        try:
            delays = [float(p) for p in value.split(",") if p.strip()]
        except ValueError as exc:
            raise ValueError(
                "RELINK_WEBHOOKS_RETRY_SCHEDULE_S is comma-separated seconds, e.g. 5,300,1800"
            ) from exc
        if any(d < 0 for d in delays):
            raise ValueError("RELINK_WEBHOOKS_RETRY_SCHEDULE_S holds a negative delay")
        return value

    @model_validator(mode="after")
    def _attempts_fit_between_polls(self) -> WebhooksSettings:
        if self.timeout_s * 2 >= self.max_poll_interval_s:
            raise ValueError(
                "RELINK_WEBHOOKS_TIMEOUT_S must be under half RELINK_WEBHOOKS_MAX_POLL_INTERVAL_S"
            )
        if self.max_poll_interval_s < self.session_timeout_s:
            raise ValueError(
                "RELINK_WEBHOOKS_MAX_POLL_INTERVAL_S must be at least the session timeout"
            )
        return self

    @property
    def send_budget_s(self) -> float:
        """How long a turn of sending may go on starting attempts."""
        return self.max_poll_interval_s / 2 - self.timeout_s

    @property
    def retry_schedule(self) -> tuple[float, ...]:
        """The waits after the 1st, 2nd, ... failed attempt."""
        return tuple(float(p) for p in self.retry_schedule_s.split(",") if p.strip())
