"""One switch is one trace across the four relink processes (issue 20, "Traces").

The gateway, relay, migrator and notifier run as `relink run` starts them (the
soak's ProcessStack, with the provider simulator and the SMTP sink), each with
OTEL_TRACES_EXPORTER=console and RELINK_TRACES_FILE naming its own file. A tutor
switches through the real OAuth flow; once the switch is done and the student's
email sent, the files must hold one trace id with spans of all four processes,
among them the notifier's `send email` of that student's email, the events'
`ce_traceparent` headers on the topic naming it, and the log lines saying it.
With the OTEL variables unset the same switch exports nothing.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from devtools.soak.run import SoakDriver, SoakTally, Tutor
from devtools.soak.stack import ProcessStack
from services.core.db.errors import StoreError
from services.core.db.models import NotificationState, SwitchState
from services.notifier.domain import NoticeKind

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PROCESSES = ("gateway", "relay", "migrator", "notifier")
SESSIONS = 2
T = TypeVar("T")


def _stack(
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    workdir: Path,
    *,
    traced: bool,
) -> ProcessStack:
    stack = ProcessStack(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        workdir=workdir,
        extra_env={"RELINK_MIGRATOR_POLL_INTERVAL_S": "0.2"},
        # RELINK_TRACES_FILE in both runs: only OTEL_TRACES_EXPORTER turns tracing on
        process_env={
            name: {
                "RELINK_TRACES_FILE": str(workdir / f"traces-{name}.jsonl"),
                **({"OTEL_TRACES_EXPORTER": "console"} if traced else {}),
            }
            for name in PROCESSES
        },
    )
    # whatever the shell running the tests exports, these runs decide
    for name in [n for n in stack.env if n.startswith("OTEL_")]:
        del stack.env[name]
    return stack


@pytest.fixture
def traced_stack(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> Iterator[ProcessStack]:
    stack = _stack(database_url, kafka_bootstrap, topic_prefix, tmp_path / "traced", traced=True)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def untraced_stack(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> Iterator[ProcessStack]:
    stack = _stack(database_url, kafka_bootstrap, topic_prefix, tmp_path / "off", traced=False)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def wait_for(check: Callable[[], T | None], *, what: str, timeout_s: float = 120.0) -> T:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            found = check()
        except (DBAPIError, StoreError, httpx.HTTPError, AssertionError, ValueError) as exc:
            found, last = None, exc
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def book(stack: ProcessStack, tutor: Tutor) -> None:
    with httpx.Client(
        base_url=stack.gateway_url, headers={"authorization": f"Bearer {tutor.token}"}, timeout=30
    ) as http:
        for n, student in enumerate(tutor.students):
            answer = http.post(
                "/api/bookings",
                json={
                    "student_id": str(student),
                    "topic": f"Traced lesson {n}",
                    "scheduled_start_at": (datetime.now(UTC) + timedelta(days=2 + n)).isoformat(),
                    "duration_minutes": 45,
                    "timezone": "UTC",
                },
            )
            assert answer.status_code == 201, answer.text


def switch_and_mail(stack: ProcessStack, engine: Engine) -> tuple[str, list[dict[str, Any]]]:
    """A tutor with SESSIONS booked sessions switches Zoom -> Meet; wait for every email sent."""
    driver = SoakDriver(stack, engine, SoakTally(), random.Random(20))
    tutor = driver.make_tutor(random.randrange(10**6), students=SESSIONS)
    driver.connect(tutor, "zoom")
    book(stack, tutor)
    switch_id = driver.connect(tutor, "google_meet")
    assert switch_id is not None

    def done() -> list[dict[str, Any]] | None:
        with engine.connect() as conn:
            state = conn.execute(
                # PENDING until the migrator has made the switch's progress row
                text(
                    "SELECT coalesce(p.state, 'PENDING') FROM switch_requests r "
                    "LEFT JOIN provider_switches p ON p.id = r.id WHERE r.id = :i"
                ),
                {"i": switch_id},
            ).scalar_one()
            rows = [
                dict(r._mapping)
                for r in conn.execute(
                    text(
                        "SELECT id, kind, state, session_id FROM notifications"
                        " WHERE switch_id = :i ORDER BY id"
                    ),
                    {"i": switch_id},
                )
            ]
        students = [r for r in rows if r["kind"] == NoticeKind.SESSION_MOVED]
        if (
            state == SwitchState.COMPLETED
            and len(students) == SESSIONS
            and any(r["kind"] == NoticeKind.TUTOR_SUMMARY for r in rows)
            and all(r["state"] == NotificationState.SENT for r in rows)
        ):
            return rows
        return None

    return str(switch_id), wait_for(done, what="the switch done and its emails sent")


def spans_of(stack: ProcessStack) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for name in PROCESSES:
        path = stack.workdir / f"traces-{name}.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        found[name] = [json.loads(line) for line in lines if line.strip()]
    return found


def _trace_id(span: dict[str, Any]) -> str:
    return str(span["context"]["trace_id"]).removeprefix("0x")


def test_one_switch_is_one_trace_across_the_four_processes(
    engine: Engine, traced_stack: ProcessStack
) -> None:
    switch_id, emails = switch_and_mail(traced_stack, engine)

    # The callback's span names the switch and starts its trace.
    def callback_span() -> dict[str, Any] | None:
        return next(
            (
                s
                for s in spans_of(traced_stack)["gateway"]
                if s["name"] == "oauth callback"
                and s["attributes"].get("relink.switch_id") == switch_id
            ),
            None,
        )

    callback = wait_for(callback_span, what="the gateway's callback span")
    trace_id = _trace_id(callback)
    assert callback["parent_id"] is None
    assert callback["resource"]["attributes"]["service.name"] == "relink-gateway"

    # Every email of the switch is sent in that trace: its `send email` span is exported
    # when the send ends, so wait for the last one.
    sent_ids = {r["id"] for r in emails}

    def in_trace() -> dict[str, list[dict[str, Any]]] | None:
        by_process = {
            name: [s for s in spans if _trace_id(s) == trace_id]
            for name, spans in spans_of(traced_stack).items()
        }
        sends = {
            s["attributes"].get("relink.notification_id")
            for s in by_process["notifier"]
            if s["name"] == "send email"
        }
        return by_process if sent_ids <= sends else None

    by_process = wait_for(in_trace, what="a send email span for every email of the switch")
    assert all(by_process[name] for name in PROCESSES), {k: len(v) for k, v in by_process.items()}
    names = {name: {s["name"] for s in spans} for name, spans in by_process.items()}
    assert "publish provider.switched" in names["relay"]
    assert "publish session.migrated" in names["relay"]
    assert "process provider.switched" in names["migrator"]
    assert "migrate session" in names["migrator"]
    assert any(n.startswith("google_meet ") for n in names["migrator"]), names["migrator"]
    assert "process session.migrated" in names["notifier"]
    # the student's email, by its notifications row
    student = next(r for r in emails if r["kind"] == NoticeKind.SESSION_MOVED)
    (send,) = [
        s
        for s in by_process["notifier"]
        if s["name"] == "send email" and s["attributes"]["relink.notification_id"] == student["id"]
    ]
    assert send["attributes"]["relink.session_id"] == str(student["session_id"])
    assert send["attributes"]["relink.email_kind"] == NoticeKind.SESSION_MOVED
    # one trace: every span's parent is a span of it, and the only root is the callback
    spans = [s for group in by_process.values() for s in group]
    ids = {s["context"]["span_id"] for s in spans}
    assert [s for s in spans if s["parent_id"] is None] == [callback]
    assert all(s["parent_id"] in ids for s in spans if s["parent_id"] is not None)
    # no address in a span
    assert "@" not in json.dumps(spans)

    # The events carry it in the outbox row's headers, hence ce_traceparent on the topic.
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT event_type, headers->>'traceparent' FROM outbox"
                " WHERE payload->>'switch_id' = :i"
            ),
            {"i": switch_id},
        ).all()
    types = {t for t, _ in rows}
    assert {"provider.switched", "session.migrated", "switch.settled"} <= types
    assert all(tp is not None and tp.split("-")[1] == trace_id for _, tp in rows), rows

    # Log lines carry the trace id: the notifier's line per email, the migrator's per session.
    notifier_log = traced_stack.log_path("notifier").read_text(errors="replace")
    line = next(
        ln for ln in notifier_log.splitlines() if f"email {student['id']} (session_moved" in ln
    )
    assert f"trace_id={trace_id}" in line and "@" not in line
    migrator_log = traced_stack.log_path("migrator").read_text(errors="replace")
    assert any(
        "session migrated" in ln and f"trace_id={trace_id}" in ln
        for ln in migrator_log.splitlines()
    )


def test_with_the_otel_variables_unset_nothing_is_exported(
    engine: Engine, untraced_stack: ProcessStack
) -> None:
    switch_id, _ = switch_and_mail(untraced_stack, engine)
    assert spans_of(untraced_stack) == {name: [] for name in PROCESSES}
    assert not any(p.name.startswith("traces-") for p in untraced_stack.workdir.iterdir())
    with engine.connect() as conn:
        traced = conn.execute(
            text(
                "SELECT count(*) FROM outbox"
                " WHERE payload->>'switch_id' = :i AND headers ? 'traceparent'"
            ),
            {"i": switch_id},
        ).scalar_one()
    assert traced == 0
    assert "OTEL_TRACES_EXPORTER" not in untraced_stack.env
