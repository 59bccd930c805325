"""`RelaySettings`: the relay's environment variables (documented in README.md)."""

from __future__ import annotations

from pydantic import Field, model_validator

from services.core.settings import CommonSettings


class RelaySettings(CommonSettings):
    """How many rows per batch, how to share tutors between relays, when to retry."""

    batch_size: int = Field(default=5000, ge=1, le=100_000, alias="RELINK_RELAY_BATCH_SIZE")
    # The polling fallback: how long to wait for a NOTIFY before looking anyway.
    poll_interval_s: float = Field(default=1.0, gt=0, alias="RELINK_RELAY_POLL_INTERVAL_S")
    # Relay N of M (0-based) takes the slots s with s % M == N; a slot is
    # hash(tutor id) mod slot_count and is leased with an advisory lock, so a
    # misconfigured twin or a relay still running with an old M never shares
    # a tutor with another relay. slot_count must be the same for every relay.
    instance: int = Field(default=0, ge=0, alias="RELINK_RELAY_INSTANCE")
    instances: int = Field(default=1, ge=1, alias="RELINK_RELAY_INSTANCES")
    slot_count: int = Field(default=64, ge=1, le=4096, alias="RELINK_RELAY_SLOTS")
    # librdkafka's message.timeout.ms: how long a batch waits for the broker's
    # acknowledgement before its rows are left for the next try.
    delivery_timeout_s: float = Field(default=15.0, gt=0, alias="RELINK_RELAY_DELIVERY_TIMEOUT_S")
    backoff_initial_s: float = Field(default=0.2, gt=0, alias="RELINK_RELAY_BACKOFF_INITIAL_S")
    backoff_max_s: float = Field(default=30.0, gt=0, alias="RELINK_RELAY_BACKOFF_MAX_S")
    linger_ms: int = Field(default=5, ge=0, alias="RELINK_RELAY_LINGER_MS")
    retention_hours: float = Field(default=168.0, gt=0, alias="RELINK_RELAY_RETENTION_HOURS")
    cleanup_interval_s: float = Field(default=300.0, gt=0, alias="RELINK_RELAY_CLEANUP_INTERVAL_S")
    metrics_interval_s: float = Field(default=30.0, gt=0, alias="RELINK_RELAY_METRICS_INTERVAL_S")
    # 0 = no HTTP endpoint (the metrics are still logged every metrics_interval_s).
    metrics_port: int = Field(default=0, ge=0, le=65535, alias="RELINK_RELAY_METRICS_PORT")
    metrics_host: str = Field(default="127.0.0.1", alias="RELINK_RELAY_METRICS_HOST")
    # Fault injection for tests only: exit (os._exit) after Kafka acknowledged
    # a batch and before its rows are marked published.
    crash_after_publish: bool = Field(default=False, alias="RELINK_RELAY_CRASH_AFTER_PUBLISH")

    @model_validator(mode="after")
    def _instance_in_range(self) -> RelaySettings:
        if self.instance >= self.instances:
            raise ValueError(
                f"RELINK_RELAY_INSTANCE={self.instance} must be below RELINK_RELAY_INSTANCES"
                f"={self.instances}"
            )
        if self.instances > self.slot_count:
            raise ValueError("RELINK_RELAY_INSTANCES must not exceed RELINK_RELAY_SLOTS")
        return self
