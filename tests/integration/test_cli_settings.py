"""Commands honour their settings: with DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS unset, every
`relink` command points at the devstack named by RELINK_DEVSTACK_*; a database it cannot
reach (or one without relink's tables) is one line naming the address, never a traceback.

Two stacks run side by side here: the tests' own and a second on ports the OS picked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from sqlalchemy import insert

from devtools.devstack.settings import DevstackSettings
from devtools.devstack.stack import Devstack
from services.core.db.engine import make_engine
from services.core.db.models import AuditEntry, User, UserRole
from tests.conftest import TestInfrastructure as Infrastructure

pytestmark = pytest.mark.slow

SETTINGS_ENV = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "RELINK_TOPIC_PREFIX")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _relink(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`relink ...` as a user runs it: a fresh process, only the given settings exported."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in SETTINGS_ENV and not k.startswith("RELINK_DEVSTACK_")
    }
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def second_stack(devstack: Infrastructure, tmp_path: Path) -> Iterator[Devstack]:
    """A second devstack (PostgreSQL and Kafka) beside the tests' own, on other ports."""
    stack = Devstack(
        DevstackSettings(
            RELINK_DEVSTACK_HOME=tmp_path / "second",
            RELINK_DEVSTACK_PG_PORT=_free_port(),
            RELINK_DEVSTACK_KAFKA_PORT=_free_port(),
            RELINK_DEVSTACK_KAFKA_CONTROLLER_PORT=_free_port(),
            RELINK_DEVSTACK_POSTGRES="embedded",
            RELINK_DEVSTACK_KAFKA="embedded",
        )
    )
    stack.up()
    try:
        yield stack
    finally:
        stack.wipe()


def test_audit_show_and_init_follow_the_devstack_ports_alone(
    devstack: Infrastructure, second_stack: Devstack
) -> None:
    assert second_stack.database_url != devstack.database_url
    pg_port = str(second_stack.settings.pg_port)
    kafka_port = str(second_stack.settings.kafka_port)

    # `relink init` with only the two ports exported: the second stack's schema and topics
    init = _relink("init", RELINK_DEVSTACK_PG_PORT=pg_port, RELINK_DEVSTACK_KAFKA_PORT=kafka_port)
    assert init.returncode == 0, init.stderr
    topics = AdminClient({"bootstrap.servers": second_stack.kafka_bootstrap}).list_topics(
        timeout=10
    )
    assert {"provider.switched", "session.migrated"} <= set(topics.topics)

    tutor = uuid.uuid4()
    engine = make_engine(second_stack.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(User).values(
                    id=tutor, role=UserRole.TUTOR.value, name="Ada", email=f"{tutor}@x.test"
                )
            )
            conn.execute(
                insert(AuditEntry).values(
                    event_id=uuid.uuid4(),
                    event_source="test",
                    event_type="provider.switched",
                    event_time=datetime.now(UTC),
                    tutor_id=tutor,
                    from_provider="zoom",
                    to_provider="google_meet",
                    payload={},
                )
            )
    finally:
        engine.dispose()

    # only RELINK_DEVSTACK_PG_PORT exported, as the newcomer did
    shown = _relink("audit", "show", "--tutor", str(tutor), RELINK_DEVSTACK_PG_PORT=pg_port)
    assert shown.returncode == 0, shown.stderr
    assert "(1 events)" in shown.stdout and "provider.switched" in shown.stdout


def test_a_database_out_of_reach_is_one_line_naming_it() -> None:
    port = _free_port()  # nobody listens there
    result = _relink(
        "audit", "show", "--tutor", str(uuid.uuid4()), RELINK_DEVSTACK_PG_PORT=str(port)
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("relink: cannot reach the database at ")
    assert f"127.0.0.1:{port}/relink" in line


def test_a_database_without_relinks_tables_is_one_line_naming_it(
    devstack: Infrastructure,
) -> None:
    name = f"relink_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(devstack.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = devstack.database_url.rpartition("/")[0]
        result = _relink(
            "audit",
            "show",
            "--tutor",
            str(uuid.uuid4()),
            DATABASE_URL=f"{base}/{name}",
            RELINK_DEVSTACK_PG_PORT="1",
        )
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"relink: the database at {base}/{name} has no relink schema")
        assert "relink db upgrade" in line
    finally:
        with psycopg.connect(devstack.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_dev_status_prints_paths_whole_on_a_narrow_terminal(devstack: Infrastructure) -> None:
    ports = {k: v for k, v in os.environ.items() if k.startswith("RELINK_DEVSTACK_")}
    result = _relink("dev", "status", COLUMNS="40", **ports)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "…" not in result.stdout
    stack = devstack.stack
    for path in (stack.postgres.log_path, stack.postgres.paths.data, stack.kafka.log_path):
        assert any(line.strip().endswith(f" {path}") for line in result.stdout.splitlines()), (
            result.stdout
        )
    assert stack.database_url in result.stdout


def test_audit_show_takes_a_tutors_email_and_tutors_find_gives_the_id(database_url: str) -> None:
    ada, alan = uuid.uuid4(), uuid.uuid4()
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(User),
                [
                    {
                        "id": ada,
                        "role": UserRole.TUTOR.value,
                        "name": "Ada Lovelace",
                        "email": "ada@demo.test",
                    },
                    {
                        "id": alan,
                        "role": UserRole.TUTOR.value,
                        "name": "Alan Turing",
                        "email": "alan@demo.test",
                    },
                    {
                        "id": uuid.uuid4(),
                        "role": UserRole.STUDENT.value,
                        "name": "Ada Student",
                        "email": "ada.student@demo.test",
                    },
                ],
            )
            conn.execute(
                insert(AuditEntry).values(
                    event_id=uuid.uuid4(),
                    event_source="test",
                    event_type="provider.switched",
                    event_time=datetime.now(UTC),
                    tutor_id=ada,
                    payload={},
                )
            )
    finally:
        engine.dispose()

    found = _relink("tutors", "find", "lovelace", DATABASE_URL=database_url)
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines() == [f"{ada}  Ada Lovelace <ada@demo.test>  not connected"]
    by_email = _relink("tutors", "find", "ALAN@demo.test", DATABASE_URL=database_url)
    assert by_email.stdout.startswith(f"{alan}  Alan Turing")
    nobody = _relink("tutors", "find", "grace", DATABASE_URL=database_url)
    assert nobody.returncode == 1 and "no tutor matches 'grace'" in nobody.stderr

    shown = _relink("audit", "show", "--tutor", "ada@demo.test", DATABASE_URL=database_url)
    assert shown.returncode == 0, shown.stderr
    assert f"ada@demo.test ({ada}) (1 events)" in shown.stdout
    unknown = _relink("audit", "show", "--tutor", "grace@demo.test", DATABASE_URL=database_url)
    assert unknown.returncode == 2 and "no tutor has the email 'grace@demo.test'" in unknown.stderr
