"""The devstack's cluster mode: several KRaft nodes, secured as production should be.

`relink dev up --brokers 3` starts three combined broker+controller nodes (a
3-voter quorum) from the same Maven Central jars as the single broker, on
loopback. Node i (0-based) listens for clients on
`RELINK_DEVSTACK_KAFKA_PORT + i * RELINK_DEVSTACK_KAFKA_PORT_STEP` and for the
quorum on `RELINK_DEVSTACK_KAFKA_CONTROLLER_PORT + i * step` (step 2 by
default: 19092/19094/19096 and 19093/19095/19097).

Security: every listener is SASL. Clients and brokers authenticate with
SCRAM-SHA-512 (the brokers' own user and the operator's `admin` are written
into the metadata at format time; each service's user is upserted through the
admin API at every start); the quorum listener uses SASL/PLAIN with a user only
the nodes know. StandardAuthorizer denies whatever no ACL allows, and
`service_acls` grants each relink process exactly what it does against Kafka.
Passwords are made once, at random, and kept in
`<devstack home>/kafka-cluster/credentials.json` (mode 0600).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.devstack.errors import DevstackError
from devtools.devstack.kafka import EmbeddedKafka, KafkaJars, broker_answers
from devtools.devstack.processes import wait_until

MECHANISM = "SCRAM-SHA-512"
# Users the nodes themselves log in as, and the operator (super users).
BROKER_USER = "broker"
CONTROLLER_USER = "controller"
ADMIN_USER = "admin"
# One user per relink process.
SERVICE_USERS = ("gateway", "relay", "migrator", "notifier", "webhooks")
SUPER_USERS = (BROKER_USER, CONTROLLER_USER, ADMIN_USER)


class ClusterSecurity:
    """The cluster's users and passwords, and the node and client settings made from them."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "credentials.json"
        self._passwords: dict[str, str] | None = None

    @property
    def passwords(self) -> dict[str, str]:
        if self._passwords is None:
            if self.path.exists():
                kept: dict[str, str] = json.loads(self.path.read_text())
                missing = [u for u in SERVICE_USERS if u not in kept]
                if missing:
                    # A devstack made before a service had its user (webhooks):
                    # add it, keeping every password the nodes already know.
                    kept.update({user: secrets.token_urlsafe(24) for user in missing})
                    spare = self.path.with_suffix(".new")
                    fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "w") as out:
                        json.dump(kept, out)
                    os.replace(spare, self.path)
                self._passwords = kept
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # url-safe letters only: they go into JAAS lines and --add-scram
                made = {user: secrets.token_urlsafe(24) for user in (*SUPER_USERS, *SERVICE_USERS)}
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as out:
                    json.dump(made, out)
                self._passwords = made
        return self._passwords

    def password(self, user: str) -> str:
        return self.passwords[user]

    def properties(self) -> list[str]:
        """The security lines of a node's server.properties."""
        broker = self.password(BROKER_USER)
        controller = self.password(CONTROLLER_USER)
        return [
            f"sasl.enabled.mechanisms={MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
            "listener.name.broker.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_USER}" password="{broker}";',
            # SCRAM users live in the metadata the quorum itself serves, so the
            # quorum listener authenticates with PLAIN and a user only nodes know
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            "listener.name.controller.plain.sasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{CONTROLLER_USER}" password="{controller}" '
            f'user_{CONTROLLER_USER}="{controller}";',
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            "super.users=" + ";".join(f"User:{user}" for user in SUPER_USERS),
        ]

    def format_arguments(self) -> list[str]:
        """`kafka-storage format` arguments that write the super users' SCRAM credentials."""
        arguments: list[str] = []
        for user in (BROKER_USER, ADMIN_USER):
            arguments += [
                "--add-scram",
                f"{MECHANISM}=[name={user},password={self.password(user)}]",
            ]
        return arguments

    def client_config(self, user: str) -> dict[str, Any]:
        """librdkafka settings that log in as `user`."""
        return {
            "security.protocol": "sasl_plaintext",
            "sasl.mechanism": MECHANISM,
            "sasl.username": user,
            "sasl.password": self.password(user),
        }

    def admin_client_config(self) -> dict[str, Any]:
        return self.client_config(ADMIN_USER)

    def env(self, user: str) -> dict[str, str]:
        """The environment that makes a relink process log in as `user`."""
        return {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": MECHANISM,
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": self.password(user),
        }


@dataclass(frozen=True)
class Grant:
    """One ACL: `user` may do `operation` on a topic, a group, or the cluster."""

    user: str
    resource: str  # "topic" | "group"
    name: str
    operation: str  # "READ" | "WRITE" | "DESCRIBE"
    prefixed: bool = False


def service_grants(
    *,
    topic_prefix: str = "",
    migrator_group: str = "",
    notifier_group: str = "relink-notifier",
    webhooks_group: str = "relink-webhooks",
) -> list[Grant]:
    """Exactly what each relink process does against Kafka, and nothing more.

    - gateway: nothing (it writes switches to the outbox table, never to Kafka);
    - relay: produces the outbox's events to provider.switched, session.migrated
      and session.failed (idempotent: Write on a topic is all Kafka asks);
    - migrator (Faust, no tables, no leader topic): consumes provider.switched in
      its group and produces to the dead-letter topic;
    - notifier: consumes the three event topics in its group and produces to the
      dead-letter topic; `relink audit` reads the same topics with throw-away
      groups named `relink-audit-reader-*` (assigned partitions, no commits);
    - webhooks (the dispatcher): consumes the three event topics in its group and
      produces nothing (an unreadable record is the notifier's to dead-letter).
    """
    from services.core.settings import CommonSettings

    topics = CommonSettings(RELINK_TOPIC_PREFIX=topic_prefix)
    events = [
        topics.topic_provider_switched,
        topics.topic_session_migrated,
        topics.topic_session_failed,
    ]
    migrator_group = migrator_group or f"{topic_prefix}relink-migrator"
    grants: list[Grant] = []
    for topic in events:
        grants += [
            Grant("relay", "topic", topic, "WRITE"),
            Grant("relay", "topic", topic, "DESCRIBE"),
        ]
    grants += [
        Grant("migrator", "topic", topics.topic_provider_switched, "READ"),
        Grant("migrator", "topic", topics.topic_provider_switched, "DESCRIBE"),
        Grant("migrator", "topic", topics.topic_dead_letter, "WRITE"),
        Grant("migrator", "topic", topics.topic_dead_letter, "DESCRIBE"),
        Grant("migrator", "group", migrator_group, "READ"),
    ]
    for topic in events:
        grants += [
            Grant("notifier", "topic", topic, "READ"),
            Grant("notifier", "topic", topic, "DESCRIBE"),
        ]
    grants += [
        Grant("notifier", "topic", topics.topic_dead_letter, "WRITE"),
        Grant("notifier", "topic", topics.topic_dead_letter, "DESCRIBE"),
        Grant("notifier", "group", notifier_group, "READ"),
        Grant("notifier", "group", "relink-audit-reader-", "READ", prefixed=True),
    ]
    for topic in events:
        grants += [
            Grant("webhooks", "topic", topic, "READ"),
            Grant("webhooks", "topic", topic, "DESCRIBE"),
        ]
    grants.append(Grant("webhooks", "group", webhooks_group, "READ"))
    return grants


def apply_grants(admin: Any, grants: list[Grant], *, timeout: float = 30.0) -> None:
    """Create the ACLs (creating one that exists is a no-op)."""
    # the modules that define them (the package re-exports them untyped)
    from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
    from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

    bindings = [
        AclBinding(
            ResourceType.TOPIC if grant.resource == "topic" else ResourceType.GROUP,
            grant.name,
            ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL,
            f"User:{grant.user}",
            "*",
            AclOperation[grant.operation],
            AclPermissionType.ALLOW,
        )
        for grant in grants
    ]
    for future in admin.create_acls(bindings, request_timeout=timeout).values():
        future.result()


class KafkaCluster:
    """Several KRaft nodes on loopback, started, stopped and killed together or one by one."""

    def __init__(
        self,
        *,
        home: Path,
        brokers: int,
        port: int,
        controller_port: int,
        port_step: int,
        version: str,
        jars_cache: Path,
        heap_mb: int,
        partitions: int,
        timeout: float,
    ) -> None:
        self.root = (home / "kafka-cluster").resolve()
        self.security = ClusterSecurity(self.root)
        self.jars = KafkaJars(cache=jars_cache.expanduser().resolve(), version=version)
        self.timeout = timeout
        ids = range(1, brokers + 1)
        ports = [base + (i - 1) * port_step for i in ids for base in (port, controller_port)]
        if len(set(ports)) != len(ports):
            raise DevstackError(
                f"the cluster's ports overlap ({ports}): choose RELINK_DEVSTACK_KAFKA_PORT_STEP "
                "so that client and controller ports stay apart"
            )
        voters = ",".join(f"{i}@127.0.0.1:{controller_port + (i - 1) * port_step}" for i in ids)
        self.nodes = [
            EmbeddedKafka(
                home=self.root,
                name=f"node-{i}",
                port=port + (i - 1) * port_step,
                controller_port=controller_port + (i - 1) * port_step,
                version=version,
                jars_cache=jars_cache,
                heap_mb=heap_mb,
                partitions=partitions,
                # a node catches up with the quorum's metadata before it answers:
                # slow on a loaded machine, slower still after a SIGKILL
                timeout=timeout * 3,
                node_id=i,
                voters=voters,
                replicas=min(3, brokers),
                cluster_id=self._cluster_id,
                security=self.security,
            )
            for i in ids
        ]

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def controller_port(self) -> int:
        return self.nodes[0].controller_port

    @property
    def ports(self) -> list[int]:
        return [p for node in self.nodes for p in (node.port, node.controller_port)]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def log_path(self) -> Path:
        return self.root / "node-*" / "kafka.log"

    @property
    def replicas(self) -> int:
        return self.nodes[0].replicas

    def _cluster_id(self) -> str:
        """One id for every node, made once."""
        path = self.root / "cluster-id"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            path.write_text(self.nodes[0].random_cluster_id() + "\n")
        return path.read_text().strip()

    def node(self, node_id: int) -> EmbeddedKafka:
        return self.nodes[node_id - 1]

    def pid(self) -> int | None:
        pids = [node.pid() for node in self.nodes]
        return next((pid for pid in pids if pid is not None), None)

    def running(self) -> bool:
        """Whether every node runs (`up` starts the ones that do not)."""
        return all(node.running() for node in self.nodes)

    def all_running(self) -> bool:
        return self.running()

    @property
    def free_ports_needed(self) -> list[int]:
        """The ports of the nodes that are down (the running ones hold theirs)."""
        return [
            port
            for node in self.nodes
            if not node.running()
            for port in (node.port, node.controller_port)
        ]

    def admin_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, **self.security.admin_client_config()}

    def admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient(self.admin_config())

    def start(self) -> float:
        """Start every node that is down, wait for all, then make the services' users."""
        started = time.monotonic()
        self.jars.fetch()
        launched = [(node, node.launch()) for node in self.nodes]
        # a node answers only once a quorum is up: launch all, then wait for each
        for node, proc in launched:
            if proc is not None:
                node.wait_ready(proc)
        self.wait_brokers(len(self.nodes))
        self.ensure_users()
        return time.monotonic() - started

    def start_node(self, node_id: int) -> None:
        """Start one node again (after `kill_node`) and wait until the cluster has it back."""
        self.node(node_id).start()
        self.wait_brokers(len([n for n in self.nodes if n.running()]))

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node (fault injection)."""
        self.node(node_id).kill()

    def wait_brokers(self, count: int) -> None:
        """Until the metadata lists `count` live brokers."""

        def enough() -> bool:
            try:
                metadata = self.admin().list_topics(timeout=2)
            except Exception:
                return False
            return len(metadata.brokers) >= count

        wait_until(
            enough, timeout=self.timeout, what="the Kafka cluster", log_path=self.nodes[0].log_path
        )

    def ensure_users(self) -> None:
        """Upsert each service's SCRAM credentials (idempotent, at every start)."""
        from confluent_kafka.admin._scram import (
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        upserts = [
            UserScramCredentialUpsertion(
                user,
                ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                self.security.password(user).encode(),
            )
            for user in SERVICE_USERS
        ]
        admin = self.admin()  # kept: its futures die with it
        for user, future in admin.alter_user_scram_credentials(upserts).items():
            try:
                future.result()
            except Exception as exc:
                raise DevstackError(f"could not create Kafka user {user}: {exc}") from exc

    def grant(
        self,
        *,
        topic_prefix: str = "",
        migrator_group: str = "",
        notifier_group: str = "",
        webhooks_group: str = "",
    ) -> None:
        """The services' ACLs for one topic prefix and its consumer groups."""
        admin = self.admin()
        apply_grants(
            admin,
            service_grants(
                topic_prefix=topic_prefix,
                migrator_group=migrator_group,
                notifier_group=notifier_group or "relink-notifier",
                webhooks_group=webhooks_group or "relink-webhooks",
            ),
        )

    def leader(self, topic: str, partition: int = 0) -> int:
        """The node id leading one partition."""
        metadata = self.admin().list_topics(topic, timeout=10)
        return int(metadata.topics[topic].partitions[partition].leader)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def ready(self) -> bool:
        return any(
            broker_answers(node.bootstrap, timeout=1.0, config=node.client_config())
            for node in self.nodes
            if node.running()
        )

    def rss_mb(self) -> float | None:
        sizes = [size for node in self.nodes if (size := node.rss_mb()) is not None]
        return sum(sizes) if sizes else None

    def wipe(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
