"""Settings of the inline baseline, from `RELINK_BASELINE_*` variables."""

from __future__ import annotations

from pydantic import Field

from services.core.settings import CommonSettings

DEFAULT_PORT = 18070


class BaselineSettings(CommonSettings):
    """Where the baseline listens and its database pool; providers come from ProviderSettings."""

    host: str = Field(default="127.0.0.1", alias="RELINK_BASELINE_HOST")
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, alias="RELINK_BASELINE_PORT")
    db_pool_size: int = Field(default=10, ge=1, le=200, alias="RELINK_BASELINE_DB_POOL_SIZE")
    state_ttl_s: int = Field(default=600, gt=0, le=3600, alias="RELINK_BASELINE_STATE_TTL_S")
