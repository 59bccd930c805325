"""PostgreSQL's passing failures in relink's words, against a real server (issues 17 and 18).

Every engine relink makes translates them once: a lost connection is
`StoreUnavailable`, a transaction PostgreSQL aborted to break a conflict is
`RetryableConflict`, and `run_again` is the one loop that runs such a
transaction again. Anything else (a constraint violated) is left alone.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import TYPE_CHECKING

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from services.core.db.engine import make_engine
from services.core.db.errors import (
    RetryableConflict,
    StoreUnavailable,
    run_again,
    run_again_async,
)
from services.migrator.adapters.db.common import make_async_engine

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class
    from tests.conftest import TestInfrastructure


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _table(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL)"))
        conn.execute(text("INSERT INTO counter VALUES (1, 0)"))


def test_a_server_that_does_not_answer_is_store_unavailable() -> None:
    engine = make_engine(f"postgresql+psycopg://relink@127.0.0.1:{_closed_port()}/relink")
    try:
        with pytest.raises(StoreUnavailable), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def test_a_connection_the_server_ends_is_store_unavailable_and_the_next_one_works(
    engine: Engine, devstack: TestInfrastructure
) -> None:
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with psycopg.connect(devstack.admin_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailable):
            conn.execute(text("SELECT 1"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1


async def test_the_migrators_async_engine_translates_too(
    database_url: str, devstack: TestInfrastructure
) -> None:
    engine = make_async_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            with psycopg.connect(devstack.admin_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(StoreUnavailable):
                await conn.execute(text("SELECT 1"))
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


def _serialization_failure(engine: Engine, *, then_commit_elsewhere: bool) -> None:
    """One REPEATABLE READ transaction adding 1; another commits a change under it first."""
    options = {"isolation_level": "REPEATABLE READ"}
    with engine.connect().execution_options(**options) as conn, conn.begin():
        seen = conn.execute(text("SELECT n FROM counter WHERE id = 1")).scalar_one()
        if then_commit_elsewhere:
            with engine.begin() as other:
                other.execute(text("UPDATE counter SET n = n + 100 WHERE id = 1"))
        conn.execute(text("UPDATE counter SET n = :n WHERE id = 1"), {"n": seen + 1})


def test_a_serialization_failure_is_a_retryable_conflict_run_again_until_it_commits(
    engine: Engine,
) -> None:
    _table(engine)
    with pytest.raises(RetryableConflict) as raised:
        _serialization_failure(engine, then_commit_elsewhere=True)
    assert raised.value.sqlstate == "40001"

    calls = 0

    def work() -> None:
        nonlocal calls
        calls += 1
        _serialization_failure(engine, then_commit_elsewhere=calls == 1)

    run_again(work, what="test")
    assert calls == 2
    with engine.connect() as conn:
        # 100 from the first run's rival, then 1 from the second run on top of it
        assert conn.execute(text("SELECT n FROM counter")).scalar_one() == 201


def test_a_deadlock_is_a_retryable_conflict(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE pair (id int PRIMARY KEY)"))
        conn.execute(text("INSERT INTO pair VALUES (1), (2)"))
    first_locked, second_locked = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def lock(mine: int, theirs: int, locked: threading.Event, other: threading.Event) -> None:
        try:
            with engine.begin() as conn:
                conn.execute(text("SELECT 1 FROM pair WHERE id = :i FOR UPDATE"), {"i": mine})
                locked.set()
                other.wait(10)
                conn.execute(text("SELECT 1 FROM pair WHERE id = :i FOR UPDATE"), {"i": theirs})
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=lock, args=(1, 2, first_locked, second_locked)),
        threading.Thread(target=lock, args=(2, 1, second_locked, first_locked)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(errors) == 1, errors
    assert isinstance(errors[0], RetryableConflict)
    assert errors[0].sqlstate == "40P01"


async def test_run_again_async_gives_up_after_its_attempts_and_lets_other_errors_through(
    engine: Engine,
) -> None:
    calls = 0

    async def always_aborted() -> None:
        nonlocal calls
        calls += 1
        raise RetryableConflict("SerializationFailure: could not serialize access")

    with pytest.raises(RetryableConflict):
        await run_again_async(always_aborted, what="test", attempts=3)
    assert calls == 3

    _table(engine)
    duplicate = 0

    def insert_duplicate() -> None:
        nonlocal duplicate
        duplicate += 1
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO counter VALUES (1, 0)"))

    # A violated constraint is a bug or a rule, not the weather: raised as is, once.
    with pytest.raises(IntegrityError):
        await asyncio.to_thread(run_again, insert_duplicate, what="test")
    assert duplicate == 1
