"""A single-node Apache Kafka broker in KRaft mode, from Maven Central jars.

The jars are fetched once with `mvn dependency:copy-dependencies` on a pinned
`org.apache.kafka:kafka_2.13` version and cached; the broker runs with the
machine's Java and a modest heap so it fits beside everything else on two
cores. Readiness is a real metadata request, not a port check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devtools.devstack.errors import DevstackError, StartTimeoutError, ToolMissingError
from devtools.devstack.processes import (
    ensure_port_free,
    port_is_open,
    read_pid,
    stop_pid,
    tail,
    wait_until,
)

if TYPE_CHECKING:
    from devtools.devstack.cluster import ClusterSecurity

# Without an SLF4J binding the broker logs nothing at all.
LOG4J_VERSION = "2.24.3"

POM_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.relink</groupId>
  <artifactId>relink-kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka_version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j_version}</version>
    </dependency>
  </dependencies>
</project>
"""

LOG4J2_PROPERTIES = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = info
logger.kafka.additivity = false
logger.kafka.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server
logger.server.level = info
logger.server.additivity = false
logger.server.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.request.additivity = false
logger.request.appenderRef.stdout.ref = STDOUT
logger.log.name = kafka.log
logger.log.level = warn
logger.log.additivity = false
logger.log.appenderRef.stdout.ref = STDOUT
logger.coordinator.name = kafka.coordinator
logger.coordinator.level = warn
logger.coordinator.additivity = false
logger.coordinator.appenderRef.stdout.ref = STDOUT
logger.controller.name = org.apache.kafka.controller
logger.controller.level = warn
logger.raft.name = org.apache.kafka.raft
logger.raft.level = warn
"""


def server_properties(
    *,
    port: int,
    controller_port: int,
    data_dir: Path,
    partitions: int,
    node_id: int = 1,
    voters: str | None = None,
    replicas: int = 1,
    security: list[str] | None = None,
) -> str:
    """A combined broker+controller node on loopback, sized for one machine.

    Alone (the default) it is a one-node cluster with plaintext listeners. With
    `voters` naming every node, `replicas` > 1 and `security` lines (see
    `ClusterSecurity.properties`), it is one of a cluster's nodes.
    """
    listeners = [
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    ]
    if security is not None:
        listeners = [
            f"listeners=BROKER://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=BROKER://127.0.0.1:{port}",
            "inter.broker.listener.name=BROKER",
            "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,BROKER:SASL_PLAINTEXT",
            *security,
        ]
    min_isr = min(2, replicas)
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node_id}",
            f"controller.quorum.voters={voters or f'{node_id}@127.0.0.1:{controller_port}'}",
            "controller.listener.names=CONTROLLER",
            *listeners,
            f"log.dirs={data_dir}",
            f"num.partitions={partitions}",
            f"default.replication.factor={replicas}",
            # acks=all then means written on at least this many brokers
            f"min.insync.replicas={min_isr}",
            # never elect a replica that may lack acknowledged writes
            "unclean.leader.election.enable=false",
            f"offsets.topic.replication.factor={replicas}",
            "offsets.topic.num.partitions=10",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={replicas}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            # spares each test's consumer group the default 3 s join wait
            "group.initial.rebalance.delay.ms=0",
            # topics are created on purpose, with their partition count
            "auto.create.topics.enable=false",
            # relink's topics keep their history (audit replay reads from the start)
            "log.retention.hours=-1",
            "num.network.threads=2",
            "num.io.threads=4",
            "num.recovery.threads.per.data.dir=1",
            "log.flush.interval.messages=9223372036854775807",
            "",
        ]
    )


class KafkaJars:
    """The cached broker jars for one Kafka version."""

    def __init__(self, *, cache: Path, version: str) -> None:
        self.version = version
        self.root = cache / version
        self.lib = self.root / "lib"

    def present(self) -> bool:
        return (self.root / ".complete").exists()

    def fetch(self) -> float:
        """Download the broker and its runtime dependencies from Maven Central once."""
        if self.present():
            return 0.0
        if shutil.which("mvn") is None:
            raise ToolMissingError(
                "Maven (`mvn`) is needed to fetch the Kafka jars from Maven Central; "
                "install it (apt-get install maven) or set KAFKA_BOOTSTRAP_SERVERS "
                "to a broker you run yourself"
            )
        start = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "pom.xml").write_text(
            POM_TEMPLATE.format(kafka_version=self.version, log4j_version=LOG4J_VERSION)
        )
        shutil.rmtree(self.lib, ignore_errors=True)
        log = self.root / "mvn.log"
        with log.open("w") as out:
            result = subprocess.run(
                [
                    "mvn",
                    "-q",
                    "-B",
                    "dependency:copy-dependencies",
                    "-DoutputDirectory=lib",
                    "-DincludeScope=runtime",
                ],
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            raise DevstackError(
                f"fetching Kafka {self.version} jars with mvn failed; read {log}\n{tail(log)}"
            )
        (self.root / ".complete").write_text(f"{len(list(self.lib.glob('*.jar')))} jars\n")
        return time.monotonic() - start


class EmbeddedKafka:
    """One KRaft node for the devstack: fetch, format, start, stop, status.

    Alone it is the devstack's single plaintext broker. A `KafkaCluster`
    makes several, each with its `node_id`, the shared `voters` and
    `cluster_id`, and its `security` (SASL listeners, authorizer).
    """

    def __init__(
        self,
        *,
        home: Path,
        port: int,
        controller_port: int,
        version: str,
        jars_cache: Path,
        heap_mb: int = 512,
        partitions: int = 6,
        timeout: float = 60.0,
        name: str = "kafka",
        node_id: int = 1,
        voters: str | None = None,
        replicas: int = 1,
        cluster_id: Callable[[], str] | None = None,
        security: ClusterSecurity | None = None,
    ) -> None:
        self.root = (home / name).resolve()
        self.port = port
        self.controller_port = controller_port
        self.heap_mb = heap_mb
        self.partitions = partitions
        self.timeout = timeout
        self.node_id = node_id
        self.voters = voters
        self.replicas = replicas
        self._cluster_id = cluster_id
        self.security = security
        self.jars = KafkaJars(cache=jars_cache.expanduser().resolve(), version=version)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "kafka.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "kafka.pid"

    @property
    def properties_path(self) -> Path:
        return self.root / "server.properties"

    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def running(self) -> bool:
        return self.pid() is not None

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        if java_home and (Path(java_home) / "bin" / "java").exists():
            return str(Path(java_home) / "bin" / "java")
        java = shutil.which("java")
        if java is None:
            raise ToolMissingError(
                "Java is needed to run the Kafka broker; install a JDK 17+ "
                "(apt-get install openjdk-17-jre-headless) or set KAFKA_BOOTSTRAP_SERVERS"
            )
        return java

    def _classpath(self) -> str:
        return str(self.jars.lib / "*")

    def random_cluster_id(self) -> str:
        return subprocess.run(
            [self._java(), "-cp", self._classpath(), "kafka.tools.StorageTool", "random-uuid"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def format_storage(self) -> None:
        """Write the config and format the log directory once."""
        self.root.mkdir(parents=True, exist_ok=True)
        properties = server_properties(
            port=self.port,
            controller_port=self.controller_port,
            data_dir=self.data,
            partitions=self.partitions,
            node_id=self.node_id,
            voters=self.voters,
            replicas=self.replicas,
            security=self.security.properties() if self.security else None,
        )
        # the secured node's file holds the broker's and controller's passwords
        self.properties_path.touch(mode=0o600)
        self.properties_path.write_text(properties)
        (self.root / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        if (self.data / "meta.properties").exists():
            return
        cluster_id = self._cluster_id() if self._cluster_id else self.random_cluster_id()
        command = [
            self._java(),
            "-cp",
            self._classpath(),
            *self._log4j_opts(),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.properties_path),
        ]
        if self.security is not None:
            # the users the brokers themselves and the operator log in as, in the
            # metadata from the first record on (the services' users come later,
            # through the admin API)
            command += self.security.format_arguments()
        result = subprocess.run(command, check=False, capture_output=True, text=True)
        if result.returncode != 0:
            raise DevstackError(
                f"formatting Kafka storage failed: {result.stderr.strip() or result.stdout}"
            )

    def _log4j_opts(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}"]

    def launch(self) -> subprocess.Popen[bytes] | None:
        """Start the JVM without waiting for it (None when it already runs)."""
        if self.running():
            return None
        self.jars.fetch()
        self.format_storage()
        ensure_port_free(self.port, what="Kafka")
        ensure_port_free(self.controller_port, what="Kafka controller")
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                [
                    self._java(),
                    f"-Xmx{self.heap_mb}m",
                    f"-Xms{min(self.heap_mb, 256)}m",
                    "-XX:+UseG1GC",
                    "-XX:MaxGCPauseMillis=20",
                    "-XX:+ExitOnOutOfMemoryError",
                    "-Djava.awt.headless=true",
                    *self._log4j_opts(),
                    "-cp",
                    self._classpath(),
                    "kafka.Kafka",
                    str(self.properties_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.root,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait until the node answers; stop it if it does not in time."""
        try:
            wait_until(
                self.ready,
                timeout=self.timeout,
                what=f"Kafka node {self.node_id}" if self.voters else "Kafka",
                log_path=self.log_path,
                alive=lambda: proc.poll() is None,
            )
        except StartTimeoutError:
            stop_pid(proc.pid, timeout=5)
            raise

    def start(self) -> float:
        """Start the broker (fetch jars and format first if needed); seconds to ready."""
        start = time.monotonic()
        proc = self.launch()
        if proc is None:
            return 0.0
        self.wait_ready(proc)
        return time.monotonic() - start

    def client_config(self) -> dict[str, Any]:
        """How the devstack itself talks to this node (as the admin on a secured one)."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if self.security is not None:
            config.update(self.security.admin_client_config())
        return config

    def ready(self) -> bool:
        """A real metadata request answered by our broker."""
        return broker_answers(self.bootstrap, timeout=1.0, config=self.client_config())

    def stop(self) -> None:
        """SIGTERM the broker and wait for a clean shutdown."""
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, timeout=30)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the broker (fault injection)."""
        pid = self.pid()
        if pid is not None:
            os.killpg(pid, 9)
            while read_pid(self.pid_file) is not None:
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    def rss_mb(self) -> float | None:
        """The broker's resident memory, when it runs."""
        import psutil

        pid = self.pid()
        if pid is None:
            return None
        return float(psutil.Process(pid).memory_info().rss) / 2**20

    def wipe(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def broker_answers(
    bootstrap: str, *, timeout: float = 2.0, config: dict[str, Any] | None = None
) -> bool:
    """Whether a broker at `bootstrap` answers a metadata request (`config`: credentials)."""
    from confluent_kafka.admin import AdminClient

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not port_is_open(int(port), host=host or "127.0.0.1"):
        return False
    # log_level 0: a broker that is still starting is expected, not worth a log line
    admin = AdminClient(
        {
            **(config or {}),
            "bootstrap.servers": bootstrap,
            "socket.timeout.ms": 1000,
            "log_level": 0,
        }
    )
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:
        return False
    return bool(metadata.brokers)
