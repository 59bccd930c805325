"""Outages without a babysitter (issue 18): every process rides out PostgreSQL and Kafka going away.

Gateway, relay, migrator and notifier run as plain processes (no supervisor:
nothing restarts what exits). In the middle of a switch PostgreSQL is stopped
for `OUTAGE_S`, then, still mid-switch, Kafka is. No process may exit; the
gateway answers 503 in its error shape while the database is away and 200
again after; the switch completes with one meeting per session and each
student gets one email; no process logs a traceback per retry.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from devtools.soak import invariants
from devtools.soak.run import SoakDriver, SoakTally, Tutor
from devtools.soak.stack import ProcessStack
from services.core.db.errors import StoreError
from services.core.db.models import SwitchState

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class
    from tests.conftest import TestInfrastructure

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# How long each of PostgreSQL and Kafka stays down (issue 18: 90 s; longer than
# the migrator's sweep, retry and cleanup timers and the notifier's session timeout).
OUTAGE_S = 90.0
SESSIONS = 16
PROCESSES = ("gateway", "relay", "migrator", "notifier")
# A traceback or a warning now and then (a row in flight when the server went, a
# line when each outage starts and ends, a reminder a minute) is fine; one per
# retry, every poll interval for minutes, is what the issue forbids (before:
# ~60 tracebacks and 7,000 error lines from the migrator, 2,000 from the notifier).
MAX_TRACEBACKS = 5
MAX_PROBLEM_LINES = 200
PROBLEM_LINE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|^%[0-4]\|")

T = TypeVar("T")


@pytest.fixture
def stack(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> Iterator[ProcessStack]:
    stack = ProcessStack(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        workdir=tmp_path / "stack",
        extra_env={
            "RELINK_MIGRATOR_POLL_INTERVAL_S": "0.2",
            # one row at a time, so the switch is still under way at each outage
            "RELINK_MIGRATOR_TUTOR_CONCURRENCY": "1",
            # every timer runs during each outage
            "RELINK_MIGRATOR_SWEEP_INTERVAL_S": "10",
            "RELINK_MIGRATOR_CLEANUP_INTERVAL_S": "10",
            # a row whose write was lost with the server comes back soon after it
            "RELINK_MIGRATOR_CLAIM_LEASE_S": "20",
        },
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def wait_for(check: Callable[[], T | None], *, what: str, timeout_s: float = 120.0) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = check()
        except (DBAPIError, StoreError, httpx.HTTPError):
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def switch_row(engine: Engine, switch_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text(
                # PENDING until the migrator has made the switch's progress row
                "SELECT coalesce(p.state, 'PENDING') AS state, "
                "coalesce(p.sessions_migrated, 0) AS sessions_migrated, "
                "coalesce(p.sessions_total, 0) AS sessions_total FROM switch_requests r "
                "LEFT JOIN provider_switches p ON p.id = r.id WHERE r.id = :id"
            ),
            {"id": switch_id},
        ).one()


def assert_all_alive(stack: ProcessStack, when: str) -> None:
    exited = {
        name: stack.processes[name].proc.returncode
        for name in PROCESSES
        if stack.processes[name].proc.poll() is not None
    }
    if exited:
        tails = "\n".join(
            f"--- {name} ---\n" + stack.log_path(name).read_text(errors="replace")[-3000:]
            for name in exited
        )
        raise AssertionError(f"exited {when}: {exited}\n{tails}")


def book_sessions(driver: SoakDriver, tutor: Tutor) -> None:
    """One session per student, so each student's mailbox is one session's."""
    with httpx.Client(
        base_url=driver.stack.gateway_url,
        headers={"authorization": f"Bearer {tutor.token}"},
        timeout=30,
    ) as http:
        for n, student in enumerate(tutor.students):
            answer = http.post(
                "/api/bookings",
                json={
                    "student_id": str(student),
                    "topic": f"Outage lesson {n}",
                    "scheduled_start_at": (datetime.now(UTC) + timedelta(days=2 + n)).isoformat(),
                    "duration_minutes": 45,
                    "timezone": "UTC",
                },
            )
            assert answer.status_code == 201, answer.text


def migrated_more_than(engine: Engine, switch_id: str, n: int) -> bool:
    row = switch_row(engine, switch_id)
    assert row.state not in (SwitchState.COMPLETED, SwitchState.COMPLETED_WITH_FAILURES), (
        f"the switch finished before the outage could start ({row.state}); slow the provider"
    )
    return bool(row.sessions_migrated > n)


def test_every_process_rides_out_a_postgresql_and_a_kafka_outage_mid_switch(
    devstack: TestInfrastructure, engine: Engine, stack: ProcessStack
) -> None:
    driver = SoakDriver(stack, engine, SoakTally(), random.Random(18))
    tutor = driver.make_tutor(18, students=SESSIONS)
    driver.connect(tutor, "zoom")
    book_sessions(driver, tutor)
    # A slow Google Calendar keeps the switch going through both outages.
    httpx.put(
        f"{stack.sim_url}/_admin/faults/google/{tutor.email}", json={"latency_ms": 1500}, timeout=5
    ).raise_for_status()
    switch_id = driver.connect(tutor, "google_meet")
    assert switch_id is not None
    status_url = f"{stack.gateway_url}/api/switches/{switch_id}"
    auth = {"authorization": f"Bearer {tutor.token}"}
    wait_for(lambda: migrated_more_than(engine, switch_id, 0), what="the first session moved")

    # PostgreSQL away: the gateway says 503 in its error shape; nobody exits.
    devstack.stop_postgres()
    try:
        answer = httpx.get(status_url, headers=auth, timeout=30)
        assert answer.status_code == 503, answer.text
        assert answer.json()["request_id"]
        time.sleep(OUTAGE_S)
        assert_all_alive(stack, "during the PostgreSQL outage")
    finally:
        devstack.start_postgres()
    wait_for(
        lambda: httpx.get(status_url, headers=auth, timeout=10).status_code == 200,
        what="the gateway to answer again",
    )
    moved = switch_row(engine, switch_id).sessions_migrated
    wait_for(
        lambda: migrated_more_than(engine, switch_id, moved),
        what="the migrator to move sessions again after PostgreSQL came back",
    )
    assert_all_alive(stack, "after the PostgreSQL outage")

    # Kafka away, still mid-switch.
    devstack.stop_kafka()
    try:
        time.sleep(OUTAGE_S)
        assert_all_alive(stack, "during the Kafka outage")
    finally:
        devstack.start_kafka()
    httpx.delete(f"{stack.sim_url}/_admin/faults/google/{tutor.email}", timeout=5)

    row = wait_for(
        lambda: (r := switch_row(engine, switch_id)).state == SwitchState.COMPLETED and r,
        what="the switch to complete",
        timeout_s=180,
    )
    assert (row.sessions_migrated, row.sessions_total) == (SESSIONS, SESSIONS)

    # One live Google meeting per session: the one each session points at.
    live = invariants.live_meetings(stack.sim_url)[("google", tutor.email)]
    with engine.connect() as conn:
        used = {
            str(r[0])
            for r in conn.execute(
                text("SELECT meeting_external_id FROM sessions WHERE tutor_id = :t"),
                {"t": tutor.id},
            )
        }
    assert sorted(m["id"] for m in live) == sorted(used)
    assert len(used) == SESSIONS

    # One email per session: each student's mailbox holds one message (one Message-ID).
    students = {str(s): None for s in tutor.students}
    with engine.connect() as conn:
        addresses = {
            str(email).lower()
            for uid, email in conn.execute(text("SELECT id, email FROM users"))
            if str(uid) in students
        }

    def one_each() -> Counter[str] | None:
        mails = httpx.get(f"{stack.inbox_url}/messages.json", timeout=30).json()
        got: dict[str, set[str]] = {a: set() for a in addresses}
        for mail in mails:
            for rcpt in mail["to"]:
                if rcpt.lower() in got:
                    got[rcpt.lower()].add(str(mail["message_id"]).strip())
        counts = Counter({a: len(ids) for a, ids in got.items()})
        return counts if all(counts[a] >= 1 for a in addresses) else None

    counts = wait_for(one_each, what="every student's email", timeout_s=120)
    time.sleep(3)  # a late duplicate would show now
    counts = one_each() or counts
    assert counts == Counter(dict.fromkeys(addresses, 1))
    assert_all_alive(stack, "at the end")

    logs = {name: stack.log_path(name).read_text(errors="replace") for name in PROCESSES}
    tracebacks = {name: log.count("Traceback") for name, log in logs.items()}
    assert all(n <= MAX_TRACEBACKS for n in tracebacks.values()), tracebacks
    problems = {
        name: sum(1 for line in log.splitlines() if PROBLEM_LINE.search(line))
        for name, log in logs.items()
    }
    assert all(n <= MAX_PROBLEM_LINES for n in problems.values()), problems
    answer = httpx.get(status_url, headers=auth, timeout=10)
    assert answer.status_code == 200
    assert uuid.UUID(answer.json()["id"]) == uuid.UUID(switch_id)
