"""`MigratorSettings`: the migrator's environment variables (documented in README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from services.core.settings import CommonSettings


class MigratorSettings(CommonSettings):
    """Concurrency bounds, batch sizes, retry limits, sweep and grace periods."""

    # Prometheus `/metrics` on this port (0 = no endpoint); `relink run` gives each
    # process its own (README "Operating relink").
    metrics_port: int = Field(default=0, ge=0, le=65535, alias="RELINK_MIGRATOR_METRICS_PORT")
    metrics_host: str = Field(default="127.0.0.1", alias="RELINK_MIGRATOR_METRICS_HOST")

    # Faust's app id is the consumer group; defaults to `<topic prefix>relink-migrator`
    # so environments sharing a cluster (and tests) never share a group.
    app_id: str = Field(default="", alias="RELINK_MIGRATOR_APP_ID")
    datadir: Path = Field(default=Path(".relink/migrator"), alias="RELINK_MIGRATOR_DATADIR")
    # The event loop the worker runs on: uvloop (the default) spends less CPU per
    # awaited socket than asyncio's own loop; `asyncio` is there to fall back to.
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", alias="RELINK_MIGRATOR_EVENT_LOOP"
    )
    # Meeting creations in flight in this process, over all tutors.
    concurrency: int = Field(default=100, ge=1, le=2000, alias="RELINK_MIGRATOR_CONCURRENCY")
    # ... and per tutor: one tutor's 100,000 sessions must not starve the others,
    # and a provider's per-user rate limit is hit later.
    tutor_concurrency: int = Field(
        default=10, ge=1, le=500, alias="RELINK_MIGRATOR_TUTOR_CONCURRENCY"
    )
    plan_batch_size: int = Field(
        default=1000, ge=1, le=100_000, alias="RELINK_MIGRATOR_PLAN_BATCH_SIZE"
    )
    # How often the executor looks for due rows when nothing woke it.
    poll_interval_s: float = Field(default=0.5, gt=0, alias="RELINK_MIGRATOR_POLL_INTERVAL_S")
    # A claimed row is invisible to other executors for this long; a crashed
    # process's rows are picked up again after it.
    claim_lease_s: float = Field(default=120.0, gt=0, alias="RELINK_MIGRATOR_CLAIM_LEASE_S")
    # Transient provider failures: attempts per session before `session.failed`
    # (retryable), with full-jitter exponential backoff between them.
    max_attempts: int = Field(default=5, ge=1, le=100, alias="RELINK_MIGRATOR_MAX_ATTEMPTS")
    backoff_base_s: float = Field(default=1.0, gt=0, alias="RELINK_MIGRATOR_BACKOFF_BASE_S")
    backoff_cap_s: float = Field(default=300.0, gt=0, alias="RELINK_MIGRATOR_BACKOFF_CAP_S")
    # Google's "Calendar usage limits exceeded" gives no reset time: the first
    # wait after it, doubled each time it repeats, up to the cap.
    usage_limit_backoff_base_s: float = Field(
        default=60.0, gt=0, alias="RELINK_MIGRATOR_USAGE_LIMIT_BACKOFF_BASE_S"
    )
    usage_limit_backoff_cap_s: float = Field(
        default=3600.0, gt=0, alias="RELINK_MIGRATOR_USAGE_LIMIT_BACKOFF_CAP_S"
    )
    # Retryable failures (after the attempts above) go back in the queue by
    # themselves this many times, the n-th after auto_retry_after_s x 2^(n-1);
    # 0 leaves them to the tutor's "retry failed" button.
    auto_retries: int = Field(default=3, ge=0, le=20, alias="RELINK_MIGRATOR_AUTO_RETRIES")
    auto_retry_after_s: float = Field(
        default=900.0, gt=0, alias="RELINK_MIGRATOR_AUTO_RETRY_AFTER_S"
    )
    # Zoom allows 100 meeting creates per user per UTC day; the migrator keeps
    # a budget so it never sends one over (0: no budget, rely on Zoom's 429).
    zoom_daily_creates: int = Field(
        default=100, ge=0, le=100_000, alias="RELINK_MIGRATOR_ZOOM_DAILY_CREATES"
    )
    # The sweep that catches sessions booked while a switch committed.
    sweep_interval_s: float = Field(default=60.0, gt=0, alias="RELINK_MIGRATOR_SWEEP_INTERVAL_S")
    sweep_window_h: float = Field(default=24.0, gt=0, alias="RELINK_MIGRATOR_SWEEP_WINDOW_H")
    cleanup_interval_s: float = Field(
        default=300.0, gt=0, alias="RELINK_MIGRATOR_CLEANUP_INTERVAL_S"
    )
    # A switch still PENDING this long after it was made: its provider.switched
    # was lost or is stuck (the broker down, a consumer that skipped it), and
    # the migrator plans it from the database instead of waiting for it.
    unhandled_after_s: float = Field(default=30.0, gt=0, alias="RELINK_MIGRATOR_UNHANDLED_AFTER_S")
    # How long the group waits for a member that stopped heartbeating (a killed
    # process) before giving its partitions to another: Faust's 60 s default
    # would leave switches unplanned for a minute after every crash.
    session_timeout_s: float = Field(
        default=10.0, ge=6.0, le=300.0, alias="RELINK_MIGRATOR_SESSION_TIMEOUT_S"
    )
    # Under 100 creates in flight, a pool of 20 (plus as many overflow) opened
    # and closed a connection -- a backend fork -- every ~5 sessions migrated:
    # PostgreSQL spent more on that than on the migration itself.
    db_pool_size: int = Field(default=40, ge=1, le=200, alias="RELINK_MIGRATOR_DB_POOL_SIZE")

    @property
    def faust_app_id(self) -> str:
        return self.app_id or f"{self.topic_prefix}relink-migrator"
