"""Typed settings shared by every relink process.

Every process reads only environment variables. Defaults point at the
devstack (`relink dev up`), so a fresh checkout runs with no configuration.
Each process has its own settings class in its own package, built on
`CommonSettings` here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.errors import ConfigurationError
from services.core.events import SCHEMA_BASE_URI, SOURCE_BASE_URI

if TYPE_CHECKING:
    from services.core.tokens import TokenCipher

# Ports the devstack uses on loopback; chosen away from the well-known ones so
# a developer's own PostgreSQL or Kafka on 5432/9092 does not collide.
DEVSTACK_PG_PORT = 54329
DEVSTACK_KAFKA_PORT = 19092
DEVSTACK_KAFKA_CONTROLLER_PORT = 19093
DEVSTACK_SMTP_PORT = 10025
DEVSTACK_PROVIDER_SIM_PORT = 18090
DEVSTACK_GATEWAY_PORT = 18000


def devstack_database_url(port: int) -> str:
    """The devstack's PostgreSQL on loopback at `port` (role and database `relink`)."""
    return f"postgresql+psycopg://relink@127.0.0.1:{port}/relink"


class CommonSettings(BaseSettings):
    """What every process needs: where PostgreSQL and Kafka are, topic names."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    dev_mode: bool = Field(default=True, alias="RELINK_DEV_MODE")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", alias="RELINK_LOG_LEVEL"
    )
    # The devstack's ports (`relink dev up`, `make run`, the test fixtures). When
    # DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS are unset, every process points at the
    # devstack on these ports, so exporting only RELINK_DEVSTACK_PG_PORT moves every
    # command to that stack (they must be declared before the two URLs below).
    devstack_pg_port: int = Field(
        default=DEVSTACK_PG_PORT, ge=1, le=65535, alias="RELINK_DEVSTACK_PG_PORT"
    )
    devstack_kafka_port: int = Field(
        default=DEVSTACK_KAFKA_PORT, ge=1, le=65535, alias="RELINK_DEVSTACK_KAFKA_PORT"
    )
    database_url: str = Field(
        default_factory=lambda data: devstack_database_url(data["devstack_pg_port"]),
        alias="DATABASE_URL",
    )
    kafka_bootstrap_servers: str = Field(
        default_factory=lambda data: f"127.0.0.1:{data['devstack_kafka_port']}",
        alias="KAFKA_BOOTSTRAP_SERVERS",
    )
    # A prefix put before every topic name: lets tests (and several
    # environments on one cluster) keep their topics apart.
    topic_prefix: str = Field(default="", alias="RELINK_TOPIC_PREFIX")
    topic_partitions: int = Field(default=6, ge=1, le=1000, alias="RELINK_TOPIC_PARTITIONS")
    topic_replication_factor: int = Field(
        default=1, ge=1, le=10, alias="RELINK_TOPIC_REPLICATION_FACTOR"
    )
    # 0: the broker's default. On a cluster, replication 3 with 2 in sync means an
    # acks=all write survives the loss of any one broker.
    topic_min_insync_replicas: int = Field(
        default=0, ge=0, le=10, alias="RELINK_TOPIC_MIN_INSYNC_REPLICAS"
    )

    # Event types published in two schema versions during a deprecation window
    # (schemas/README.md), as a JSON list, e.g. '["session.failed"]': a producer
    # that builds a type's payload in v1 and v2 (`events.outbox_rows`) emits both
    # while the type is listed here, only the oldest otherwise.
    events_dual_publish: list[str] = Field(default_factory=list, alias="RELINK_EVENTS_DUAL_PUBLISH")
    # The deployment's own URLs in the event contract (issue 20), absolute URIs:
    # every producer's `ce_source` is `<source base>/<process>` (oauth-gateway,
    # migrator), and `ce_dataschema` / the schemas' `$id` as the gateway serves
    # them are `<schema base>/<type>/v<n>.json` (point it at the gateway's
    # `/schemas`). Readers resolve a schema by type and version, whatever the base.
    events_source_base: str = Field(default=SOURCE_BASE_URI, alias="RELINK_EVENTS_SOURCE_BASE")
    events_schema_base: str = Field(default=SCHEMA_BASE_URI, alias="RELINK_EVENTS_SCHEMA_BASE")

    # How every Kafka client (librdkafka and Faust's aiokafka) connects: read here
    # once, turned into client configs by `services.core.kafka`. The default is the
    # devstack's single plaintext broker; a production cluster wants SASL_SSL.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", alias="KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512", alias="KAFKA_SASL_MECHANISM"
    )
    kafka_sasl_username: str = Field(default="", alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: str = Field(default="", alias="KAFKA_SASL_PASSWORD", repr=False)
    # A PEM file of the CA that signed the brokers' certificates (empty: the system's).
    kafka_ssl_ca_location: str = Field(default="", alias="KAFKA_SSL_CA_LOCATION")
    # Client certificate and key (PEM) when the brokers want mutual TLS.
    kafka_ssl_certificate_location: str = Field(default="", alias="KAFKA_SSL_CERTIFICATE_LOCATION")
    kafka_ssl_key_location: str = Field(default="", alias="KAFKA_SSL_KEY_LOCATION")
    kafka_ssl_key_password: str = Field(default="", alias="KAFKA_SSL_KEY_PASSWORD", repr=False)

    # Token encryption keys, `<id>:<base64 32 bytes>` comma-separated, newest last.
    token_keys: str = Field(default="", alias="RELINK_TOKEN_KEYS", repr=False)

    @field_validator("events_source_base", "events_schema_base")
    @classmethod
    def _absolute_uri(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if not parts.scheme or not (parts.netloc or parts.path) or parts.query or parts.fragment:
            raise ValueError(
                f"{value!r} is not an absolute URI without query or fragment "
                "(e.g. https://relink.example.com)"
            )
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _kafka_credentials_complete(self) -> CommonSettings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ConfigurationError(
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        return self

    @property
    def kafka_uses_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    @property
    def kafka_uses_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @model_validator(mode="after")
    def _refuse_dev_secrets_outside_dev(self) -> CommonSettings:
        from services.core.tokens import DEV_TOKEN_KEYS

        if not self.token_keys:
            if not self.dev_mode:
                raise ConfigurationError(
                    "RELINK_TOKEN_KEYS is required outside dev mode "
                    "(generate one with `relink keys generate`)"
                )
            self.token_keys = DEV_TOKEN_KEYS
        elif not self.dev_mode and _holds_dev_key(self.token_keys, DEV_TOKEN_KEYS):
            raise ConfigurationError("the public dev token key must not be used outside dev mode")
        return self

    def token_cipher(self) -> TokenCipher:
        """The cipher for tokens at rest, built from RELINK_TOKEN_KEYS."""
        from services.core.tokens import TokenCipher

        return TokenCipher.from_spec(self.token_keys)

    @property
    def topic_provider_switched(self) -> str:
        return f"{self.topic_prefix}provider.switched"

    @property
    def topic_session_migrated(self) -> str:
        return f"{self.topic_prefix}session.migrated"

    @property
    def topic_session_failed(self) -> str:
        return f"{self.topic_prefix}session.failed"

    @property
    def topic_dead_letter(self) -> str:
        return f"{self.topic_prefix}relink.dead-letter"

    @property
    def topics(self) -> list[str]:
        """Every topic relink owns, the dead-letter topic last."""
        return [
            self.topic_provider_switched,
            self.topic_session_migrated,
            self.topic_session_failed,
            self.topic_dead_letter,
        ]

    @property
    def database_address(self) -> str:
        """DATABASE_URL without its password, for messages."""
        from sqlalchemy import make_url

        try:
            return make_url(self.sync_database_url).render_as_string(hide_password=True)
        except Exception:  # an unparseable URL: say so rather than echo it
            return "(an unparseable DATABASE_URL)"

    @property
    def sync_database_url(self) -> str:
        """The URL as SQLAlchemy's psycopg 3 dialect wants it."""
        return normalize_database_url(self.database_url)


def normalize_database_url(url: str) -> str:
    """Accept `postgres://` and `postgresql://` and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _holds_dev_key(spec: str, dev_spec: str) -> bool:
    """Whether any key in `spec` is a dev key, compared as key bytes (not as base64 text,
    which has several spellings of one key: padding, line breaks)."""
    from services.core.tokens import parse_keys

    dev = {k.secret for k in parse_keys(dev_spec)}
    return any(k.secret in dev for k in parse_keys(spec))
