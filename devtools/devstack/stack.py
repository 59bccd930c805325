"""The devstack as one object: the same code behind `relink dev` and the test fixtures."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.devstack.cluster import KafkaCluster
from devtools.devstack.kafka import EmbeddedKafka, broker_answers
from devtools.devstack.postgres import EmbeddedPostgres
from devtools.devstack.processes import ensure_port_free
from devtools.devstack.settings import DevstackSettings
from services.core.settings import CommonSettings


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
        self.kafka: EmbeddedKafka | KafkaCluster
        if self.settings.kafka_brokers > 1:
            self.kafka = KafkaCluster(
                home=home,
                brokers=self.settings.kafka_brokers,
                port=self.settings.kafka_port,
                controller_port=self.settings.kafka_controller_port,
                port_step=self.settings.kafka_port_step,
                version=self.settings.kafka_version,
                jars_cache=self.settings.kafka_jars_cache,
                heap_mb=self.settings.kafka_cluster_heap_mb,
                partitions=self.settings.topic_partitions,
                timeout=self.settings.start_timeout_s,
            )
            return
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
    def cluster(self) -> KafkaCluster | None:
        """The embedded cluster, in cluster mode."""
        if self.embedded_kafka and isinstance(self.kafka, KafkaCluster):
            return self.kafka
        return None

    @property
    def kafka_bootstrap(self) -> str:
        if self.embedded_kafka:
            return self.kafka.bootstrap
        return self.settings.kafka_bootstrap_servers

    def env(self, kafka_user: str = "admin") -> dict[str, str]:
        """Environment variables that point a relink process at this devstack.

        In cluster mode they also make it log in as `kafka_user` (the operator's
        `admin` unless a service's user is named) and create topics replicated
        three times with two in sync.
        """
        env = {
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
        }
        cluster = self.cluster
        if cluster is not None:
            env["RELINK_TOPIC_REPLICATION_FACTOR"] = str(cluster.replicas)
            env["RELINK_TOPIC_MIN_INSYNC_REPLICAS"] = str(min(2, cluster.replicas))
            env.update(cluster.security.env(kafka_user))
        return env

    def kafka_settings(self, topic_prefix: str = "", kafka_user: str = "admin") -> CommonSettings:
        """Settings for a client of this devstack's Kafka (the admin's, in cluster mode)."""
        values: dict[str, Any] = {**self.env(kafka_user), "RELINK_TOPIC_PREFIX": topic_prefix}
        return CommonSettings(**values)

    def create_topics(
        self,
        topic_prefix: str = "",
        *,
        partitions: int | None = None,
        migrator_group: str = "",
        notifier_group: str = "",
        webhooks_group: str = "",
    ) -> list[str]:
        """relink's topics for one prefix; in cluster mode each service's ACLs on them too.

        The groups default to what the migrator, notifier and webhooks dispatcher
        use with that prefix and no RELINK_MIGRATOR_APP_ID / RELINK_NOTIFIER_GROUP_ID /
        RELINK_WEBHOOKS_GROUP_ID of their own.
        """
        from services.core.kafka import create_topics

        created = create_topics(self.kafka_settings(topic_prefix), partitions=partitions)
        cluster = self.cluster
        if cluster is not None:
            cluster.ensure_users()
            cluster.grant(
                topic_prefix=topic_prefix,
                migrator_group=migrator_group,
                notifier_group=notifier_group,
                webhooks_group=webhooks_group,
            )
        return created

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
            if isinstance(self.kafka, KafkaCluster):
                for port in self.kafka.free_ports_needed:
                    ensure_port_free(port, what="Kafka cluster")
            else:
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
            # a Kafka that failed half-way (a cluster node up, the users not made) too
            self.down(parts=tuple(report.started) + (("kafka",) if want_kafka else ()))
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
            if isinstance(self.kafka, KafkaCluster):
                up = sum(node.running() for node in self.kafka.nodes)
                running = self.kafka.all_running() and self.kafka.ready()
                detail = (
                    f"{up}/{len(self.kafka.nodes)} nodes, SASL/SCRAM, logs {self.kafka.log_path}"
                )
            else:
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
