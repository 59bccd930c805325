"""The devstack as one object: the same code behind `relink dev` and the test fixtures."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools.devstack.kafka import EmbeddedKafka, broker_answers
from devtools.devstack.postgres import EmbeddedPostgres
from devtools.devstack.processes import ensure_port_free
from devtools.devstack.settings import DevstackSettings


@dataclass
class PartStatus:
    name: str
    running: bool
    address: str
    detail: str = ""


@dataclass
class StartReport:
    """What `up` did, with timings for the benchmark record."""

    postgres_s: float = 0.0
    kafka_s: float = 0.0
    total_s: float = 0.0
    started: list[str] = field(default_factory=list)


class Devstack:
    """Embedded PostgreSQL and Kafka, or external ones named by the settings."""

    def __init__(self, settings: DevstackSettings | None = None) -> None:
        self.settings = settings or DevstackSettings()
        home = self.settings.home.expanduser().resolve()
        self.home = home
        self.postgres = EmbeddedPostgres(
            home=home, port=self.settings.pg_port, timeout=self.settings.start_timeout_s
        )
        self.kafka = EmbeddedKafka(
            home=home,
            port=self.settings.kafka_port,
            controller_port=self.settings.kafka_controller_port,
            version=self.settings.kafka_version,
            jars_cache=self.settings.kafka_jars_cache,
            heap_mb=self.settings.kafka_heap_mb,
            partitions=self.settings.topic_partitions,
            timeout=self.settings.start_timeout_s,
        )

    @property
    def embedded_postgres(self) -> bool:
        return self.settings.postgres_mode == "embedded"

    @property
    def embedded_kafka(self) -> bool:
        return self.settings.kafka_mode == "embedded"

    @property
    def database_url(self) -> str:
        if self.embedded_postgres:
            return self.postgres.database_url
        return self.settings.sync_database_url

    @property
    def kafka_bootstrap(self) -> str:
        if self.embedded_kafka:
            return self.kafka.bootstrap
        return self.settings.kafka_bootstrap_servers

    def env(self) -> dict[str, str]:
        """Environment variables that point a relink process at this devstack."""
        return {
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
        }

    def up(self) -> StartReport:
        """Start whatever is not running yet; return how long each part took.

        Ports are checked before anything starts, and a part that fails to
        start takes down what this call already started: no half-up stack.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        report = StartReport()
        start = time.monotonic()
        want_pg = self.embedded_postgres and not self.postgres.running()
        want_kafka = self.embedded_kafka and not self.kafka.running()
        if want_pg:
            ensure_port_free(self.postgres.port, what="PostgreSQL")
        if want_kafka:
            ensure_port_free(self.kafka.port, what="Kafka")
            ensure_port_free(self.kafka.controller_port, what="Kafka controller")
        try:
            if want_pg:
                t = time.monotonic()
                self.postgres.start()
                report.postgres_s = time.monotonic() - t
                report.started.append("postgres")
            if want_kafka:
                t = time.monotonic()
                self.kafka.start()
                report.kafka_s = time.monotonic() - t
                report.started.append("kafka")
        except BaseException:
            self.down(parts=tuple(report.started))
            raise
        report.total_s = time.monotonic() - start
        return report

    def down(self, *, parts: tuple[str, ...] = ("kafka", "postgres")) -> None:
        """Stop what `up` started (external servers are left alone)."""
        if "kafka" in parts and self.embedded_kafka:
            self.kafka.stop()
        if "postgres" in parts and self.embedded_postgres:
            self.postgres.stop()

    @property
    def provider_sim_state_file(self) -> Path:
        """Where `relink run`'s provider simulator keeps its world across restarts."""
        return self.home / "provider-sim" / "state.pickle"

    def wipe(self) -> None:
        """Stop everything and remove the data directories (the simulator's world too)."""
        self.down()
        self.kafka.wipe()
        self.postgres.wipe()
        shutil.rmtree(self.provider_sim_state_file.parent, ignore_errors=True)

    def restart_kafka(self) -> None:
        self.kafka.stop()
        self.kafka.start()

    def restart_postgres(self) -> None:
        self.postgres.stop()
        self.postgres.start()

    def status(self) -> list[PartStatus]:
        """Whether each part runs, and where."""
        parts: list[PartStatus] = []
        if self.embedded_postgres:
            parts.append(
                PartStatus(
                    "postgres",
                    self.postgres.initialized() and self.postgres.running(),
                    self.database_url,
                    f"data {self.postgres.paths.data}, log {self.postgres.log_path}",
                )
            )
        else:
            parts.append(PartStatus("postgres", True, self.database_url, "external"))
        if self.embedded_kafka:
            rss = self.kafka.rss_mb()
            running = self.kafka.running() and broker_answers(self.kafka_bootstrap)
            detail = f"log {self.kafka.log_path}"
            if rss is not None:
                detail = f"{rss:.0f} MB resident, " + detail
            parts.append(PartStatus("kafka", running, self.kafka_bootstrap, detail))
        else:
            parts.append(
                PartStatus(
                    "kafka", broker_answers(self.kafka_bootstrap), self.kafka_bootstrap, "external"
                )
            )
        return parts


def default_home() -> Path:
    return DevstackSettings().home
