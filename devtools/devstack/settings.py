"""Where the devstack keeps its data and which ports it binds.

The product's defaults (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS) point at these
ports; the port constants therefore stay in `services.core.settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from services.core.settings import DEVSTACK_KAFKA_CONTROLLER_PORT, CommonSettings


class DevstackSettings(CommonSettings):
    """Where the devstack keeps its data and which ports it binds."""

    home: Path = Field(default=Path(".devstack"), alias="RELINK_DEVSTACK_HOME")
    kafka_controller_port: int = Field(
        default=DEVSTACK_KAFKA_CONTROLLER_PORT, alias="RELINK_DEVSTACK_KAFKA_CONTROLLER_PORT"
    )
    # Cluster mode (`relink dev up --brokers 3`): node i (0-based) takes the client
    # port RELINK_DEVSTACK_KAFKA_PORT + i * step and the quorum port
    # RELINK_DEVSTACK_KAFKA_CONTROLLER_PORT + i * step; the default step of 2
    # interleaves them (19092/19094/19096 and 19093/19095/19097).
    kafka_brokers: int = Field(default=1, ge=1, le=5, alias="RELINK_DEVSTACK_KAFKA_BROKERS")
    kafka_port_step: int = Field(default=2, ge=1, alias="RELINK_DEVSTACK_KAFKA_PORT_STEP")
    # Each cluster node's heap (three of them share the machine).
    kafka_cluster_heap_mb: int = Field(
        default=384, ge=256, alias="RELINK_DEVSTACK_KAFKA_CLUSTER_HEAP_MB"
    )
    # Pinned: 4.1.1 is known to work from Maven Central on these machines.
    kafka_version: str = Field(default="4.1.1", alias="RELINK_KAFKA_VERSION")
    kafka_heap_mb: int = Field(default=512, ge=256, alias="RELINK_KAFKA_HEAP_MB")
    kafka_jars_cache: Path = Field(
        default=Path.home() / ".cache" / "relink" / "kafka", alias="RELINK_KAFKA_CACHE"
    )
    start_timeout_s: float = Field(default=60.0, gt=0, alias="RELINK_DEVSTACK_START_TIMEOUT_S")
    # "embedded" starts our own; "external" means DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS
    # already point at a running server and the devstack leaves it alone.
    postgres_mode: Literal["embedded", "external"] | None = Field(
        default=None, alias="RELINK_DEVSTACK_POSTGRES"
    )
    kafka_mode: Literal["embedded", "external"] | None = Field(
        default=None, alias="RELINK_DEVSTACK_KAFKA"
    )

    @property
    def pg_port(self) -> int:
        """RELINK_DEVSTACK_PG_PORT (declared in CommonSettings: the URLs derive from it)."""
        return self.devstack_pg_port

    @property
    def kafka_port(self) -> int:
        """RELINK_DEVSTACK_KAFKA_PORT (declared in CommonSettings: the URLs derive from it)."""
        return self.devstack_kafka_port

    @model_validator(mode="after")
    def _external_when_overridden(self) -> DevstackSettings:
        # Setting DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS means "use that server":
        # the devstack then leaves that part alone unless told otherwise.
        if self.postgres_mode is None:
            overridden = "database_url" in self.model_fields_set
            self.postgres_mode = "external" if overridden else "embedded"
        if self.kafka_mode is None:
            overridden = "kafka_bootstrap_servers" in self.model_fields_set
            self.kafka_mode = "external" if overridden else "embedded"
        return self
