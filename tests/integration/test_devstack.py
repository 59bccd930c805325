"""The devstack from nothing: start, status, Kafka restart without loss, clean stop.

This test runs its own devstack (own folder, own ports) beside the shared one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer

from devtools.devstack import postgres
from devtools.devstack.errors import PortInUseError
from devtools.devstack.processes import pid_alive, port_is_open
from devtools.devstack.settings import DevstackSettings
from devtools.devstack.stack import Devstack
from services.core.kafka import consumer_config, create_topics, producer_config
from services.core.settings import CommonSettings

pytestmark = pytest.mark.slow


@pytest.fixture
def own_stack(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = DevstackSettings(
        RELINK_DEVSTACK_HOME=tmp_path / "devstack",
        RELINK_DEVSTACK_PG_PORT=54391,
        RELINK_DEVSTACK_KAFKA_PORT=19192,
        RELINK_DEVSTACK_KAFKA_CONTROLLER_PORT=19193,
        RELINK_DEVSTACK_POSTGRES="embedded",
        RELINK_DEVSTACK_KAFKA="embedded",
    )
    stack = Devstack(settings)
    yield stack
    stack.wipe()


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    settings = CommonSettings(KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    consumer = Consumer(consumer_config(settings, group_id=f"g-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        for _ in range(200):
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                value = msg.value()
                assert value is not None  # every message the test produced has a value
                values.append(value)
            if len(values) >= expected:
                break
    finally:
        consumer.close()
    return values


def test_devstack_lifecycle(own_stack: Devstack) -> None:
    assert not any(part.running for part in own_stack.status())

    report = own_stack.up()
    assert report.started == ["postgres", "kafka"]
    assert all(part.running for part in own_stack.status())
    with psycopg.connect(own_stack.database_url.replace("+psycopg", "")) as conn:
        assert conn.execute("SHOW track_commit_timestamp").fetchone() == ("on",)

    # a second `up` is a no-op, and a second stack on the same ports is refused
    assert own_stack.up().started == []
    other = Devstack(
        DevstackSettings(
            RELINK_DEVSTACK_HOME=own_stack.home.parent / "other",
            RELINK_DEVSTACK_PG_PORT=54392,
            RELINK_DEVSTACK_KAFKA_PORT=19192,
            RELINK_DEVSTACK_KAFKA_CONTROLLER_PORT=19194,
            RELINK_DEVSTACK_POSTGRES="embedded",
            RELINK_DEVSTACK_KAFKA="embedded",
        )
    )
    with pytest.raises(PortInUseError, match="19192"):
        other.up()
    # refused before anything started: no half-up stack left behind
    assert not port_is_open(54392)
    other.wipe()

    # committed messages survive a broker restart
    settings = CommonSettings(KAFKA_BOOTSTRAP_SERVERS=own_stack.kafka_bootstrap)
    create_topics(settings, names=["survives"], partitions=2)
    producer = Producer(producer_config(settings))
    for i in range(50):
        producer.produce("survives", key=f"k{i % 5}".encode(), value=f"m{i}".encode())
    assert producer.flush(30) == 0
    broker_pid = own_stack.kafka.pid()
    own_stack.restart_kafka()
    assert own_stack.kafka.pid() != broker_pid
    values = _consume_all(own_stack.kafka_bootstrap, "survives", 50)
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(50))

    # down stops everything it started, leaving nothing listening
    kafka_pid = own_stack.kafka.pid()
    assert kafka_pid is not None
    own_stack.down()
    assert not pid_alive(kafka_pid)
    assert not port_is_open(19192)
    assert not port_is_open(54391)
    assert not any(part.running for part in own_stack.status())


def test_missing_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devtools.devstack.errors import ToolMissingError
    from devtools.devstack.kafka import KafkaJars

    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn anywhere
    jars = KafkaJars(cache=tmp_path / "empty-cache", version="4.1.1")
    with pytest.raises(ToolMissingError, match="mvn"):
        jars.fetch()


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devtools.devstack.errors import ToolMissingError
    from devtools.devstack.kafka import EmbeddedKafka

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    kafka = EmbeddedKafka(
        home=tmp_path,
        port=19392,
        controller_port=19393,
        version="4.1.1",
        jars_cache=DevstackSettings().kafka_jars_cache,
    )
    with pytest.raises(ToolMissingError, match="Java"):
        kafka.start()
    assert not port_is_open(19392)


def test_a_start_that_times_out_names_its_log(tmp_path: Path) -> None:
    from devtools.devstack.errors import StartTimeoutError
    from devtools.devstack.kafka import EmbeddedKafka

    kafka = EmbeddedKafka(
        home=tmp_path,
        port=19492,
        controller_port=19493,
        version="4.1.1",
        jars_cache=DevstackSettings().kafka_jars_cache,
        timeout=0.5,  # far too short for a JVM: the start must give up cleanly
    )
    with pytest.raises(StartTimeoutError, match=str(kafka.log_path)):
        kafka.start()
    assert not kafka.running()
    assert not port_is_open(19492)


@pytest.mark.skipif(
    os.geteuid() != 0, reason="the copy exists for a root-owned checkout run as nobody"
)
def test_the_copy_for_nobody_runs_as_nobody() -> None:
    """A checkout out of `nobody`'s reach (e.g. a mkdtemp folder, mode 0700) gets a copy of
    PostgreSQL that `nobody` can run — with the bundled libraries its RPATH points at."""
    under = Path(tempfile.mkdtemp(prefix="relink-test-", dir="/var/tmp"))
    try:
        under.chmod(0o755)
        copy = postgres.copy_for_nobody(postgres.pginstall_dir(), under=under)
        result = subprocess.run(
            [*postgres._drop_privileges_prefix(), str(copy / "bin" / "initdb"), "--version"],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        shutil.rmtree(under, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    assert "initdb (PostgreSQL)" in result.stdout
