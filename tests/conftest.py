"""Fixtures shared by every test: a real PostgreSQL and a real Kafka broker.

By default they come from the devstack (embedded PostgreSQL, Kafka from Maven
Central jars). A devstack that is already running (`relink dev up`) is reused
and left running; one the tests started is stopped at the end. With
`RELINK_TEST_DOCKER=1` and a Docker engine answering, testcontainers provides
them instead (that path cannot run on machines without Docker).

Isolation: each test gets its own database (copied from a migrated template)
and its own topic prefix, so tests pass in any order and any subset.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine

from devtools.devstack.settings import DevstackSettings
from services.core.db import migrate
from services.core.settings import CommonSettings, normalize_database_url


@dataclass
class TestInfrastructure:
    """What the tests talk to, and the controls the fault tests need."""

    database_url: str  # SQLAlchemy URL of the server's main database
    kafka_bootstrap: str
    stack: Any = None  # the Devstack, when the devstack provides the servers
    started: list[str] = field(default_factory=list)

    @property
    def admin_dsn(self) -> str:
        return normalize_database_url(self.database_url).replace("postgresql+psycopg", "postgresql")

    def stop_kafka(self) -> None:
        self._need_stack().kafka.stop()

    def start_kafka(self) -> None:
        self._need_stack().kafka.start()

    def kill_kafka(self) -> None:
        self._need_stack().kafka.kill()

    def restart_kafka(self) -> None:
        self._need_stack().restart_kafka()

    def stop_postgres(self) -> None:
        self._need_stack().postgres.stop()

    def start_postgres(self) -> None:
        self._need_stack().postgres.start()

    def restart_postgres(self) -> None:
        self._need_stack().restart_postgres()

    def _need_stack(self) -> Any:
        if self.stack is None:
            pytest.skip("needs the devstack (not available with external servers)")
        return self.stack


def _docker_requested() -> bool:
    if os.environ.get("RELINK_TEST_DOCKER") != "1":
        return False
    import shutil
    import subprocess

    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="session")
def devstack() -> Iterator[TestInfrastructure]:
    """A running PostgreSQL and Kafka for the whole test session."""
    if _docker_requested():
        yield from _docker_infrastructure()
        return
    from devtools.devstack.stack import Devstack

    stack = Devstack(DevstackSettings())
    report = stack.up()
    infra = TestInfrastructure(
        database_url=stack.database_url,
        kafka_bootstrap=stack.kafka_bootstrap,
        stack=stack,
        started=report.started,
    )
    try:
        yield infra
    finally:
        # leave a devstack someone else started alone; stop our own
        stack.down(parts=tuple(report.started))


def _docker_infrastructure() -> Iterator[TestInfrastructure]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with (
        PostgresContainer("postgres:17", driver="psycopg") as pg,
        KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka,
    ):
        yield TestInfrastructure(
            database_url=pg.get_connection_url(), kafka_bootstrap=kafka.get_bootstrap_server()
        )


@pytest.fixture(scope="session")
def kafka_bootstrap(devstack: TestInfrastructure) -> str:
    return devstack.kafka_bootstrap


@pytest.fixture(scope="session")
def migrated_template(devstack: TestInfrastructure) -> Iterator[str]:
    """A database migrated to head, copied for each test (copying is much faster)."""
    name = f"relink_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(devstack.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(_with_database(devstack.database_url, name))
    try:
        yield name
    finally:
        _drop_database(devstack, name)


def _with_database(url: str, name: str) -> str:
    base, _, _ = normalize_database_url(url).rpartition("/")
    return f"{base}/{name}"


def _drop_database(devstack: TestInfrastructure, name: str) -> None:
    try:
        with psycopg.connect(devstack.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.OperationalError:
        pass  # the server was stopped by a fault test; its data dies with the devstack


@pytest.fixture
def database_url(devstack: TestInfrastructure, migrated_template: str) -> Iterator[str]:
    """A fresh, migrated, empty database of this test's own."""
    name = f"relink_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(devstack.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"')
    try:
        yield _with_database(devstack.database_url, name)
    finally:
        _drop_database(devstack, name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    from services.core.db.engine import make_engine

    eng = make_engine(database_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def topic_prefix(devstack: TestInfrastructure) -> Iterator[str]:
    """A prefix of this test's own, whose relink topics already exist."""
    from services.core.kafka import create_topics, delete_topics

    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = CommonSettings(
        KAFKA_BOOTSTRAP_SERVERS=devstack.kafka_bootstrap, RELINK_TOPIC_PREFIX=prefix
    )
    create_topics(settings, partitions=3)
    try:
        yield prefix
    finally:
        # The broker may be down after a fault test; the topics die with the devstack.
        with contextlib.suppress(Exception):
            delete_topics(settings, settings.topics)


@pytest.fixture
def relink_env(
    devstack: TestInfrastructure, database_url: str, topic_prefix: str
) -> dict[str, str]:
    """Environment for a relink subprocess pointed at this test's database and topics."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": devstack.kafka_bootstrap,
        "RELINK_TOPIC_PREFIX": topic_prefix,
        "RELINK_DEV_MODE": "true",
    }


@pytest.fixture
def settings(relink_env: dict[str, str]) -> CommonSettings:
    """CommonSettings pointed at this test's database and topics."""
    return CommonSettings(
        DATABASE_URL=relink_env["DATABASE_URL"],
        KAFKA_BOOTSTRAP_SERVERS=relink_env["KAFKA_BOOTSTRAP_SERVERS"],
        RELINK_TOPIC_PREFIX=relink_env["RELINK_TOPIC_PREFIX"],
    )
