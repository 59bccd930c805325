"""Helpers for the notifier tests: a real SMTP server, the rows emails need, real events on
the real topics, and the notifier run in-process or as `relink notifier`."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer
from sqlalchemy import Engine, text

from devtools.smtp_sink.sink import SmtpSink
from services.core import events
from services.core.kafka import producer_config
from services.core.messages import SwitchSettled
from services.core.settings import CommonSettings
from services.notifier.bootstrap import build_loop
from services.notifier.settings import NotifierSettings

SOURCE = "/relink/migrator"
START = datetime(2031, 3, 10, 15, 0, tzinfo=UTC)


@pytest.fixture
def smtp_sink(tmp_path: Any) -> Iterator[SmtpSink]:
    with SmtpSink(folder=tmp_path / "mail") as sink:
        yield sink


def notifier_env(relink_env: dict[str, str], sink: SmtpSink) -> dict[str, str]:
    """Environment of a notifier aimed at this test's database, topics and SMTP sink."""
    return {
        **relink_env,
        "RELINK_SMTP_HOST": sink.host,
        "RELINK_SMTP_PORT": str(sink.port),
        "RELINK_NOTIFIER_GROUP_ID": f"notifier-{uuid.uuid4().hex[:8]}",
        "RELINK_NOTIFIER_BACKOFF_INITIAL_S": "0.2",
        "RELINK_NOTIFIER_BACKOFF_MAX_S": "1.0",
        "RELINK_NOTIFIER_POLL_TIMEOUT_S": "0.2",
        "RELINK_NOTIFIER_SESSION_TIMEOUT_S": "6",
        "RELINK_NOTIFIER_GATEWAY_PUBLIC_URL": "https://relink.test",
    }


@pytest.fixture
def env(relink_env: dict[str, str], smtp_sink: SmtpSink) -> dict[str, str]:
    return notifier_env(relink_env, smtp_sink)


@pytest.fixture
def notifier_settings(env: dict[str, str]) -> NotifierSettings:
    ours: dict[str, Any] = {
        k: v for k, v in env.items() if k.startswith(("RELINK_", "DATA", "KAFKA"))
    }
    return NotifierSettings(**ours)


@dataclass
class Student:
    id: uuid.UUID
    name: str
    email: str
    timezone: str


@dataclass
class World:
    """A tutor, students, bookings, sessions and one Zoom → Google Meet switch."""

    tutor_id: uuid.UUID
    tutor_email: str
    switch_id: uuid.UUID
    students: list[Student]
    sessions: list[dict[str, Any]] = field(default_factory=list)
    switch_state: str = "COMPLETED"
    failed: int = 0


def make_world(
    engine: Engine,
    *,
    sessions_per_student: list[int],
    timezones: list[str] | None = None,
    switch_state: str = "COMPLETED",
    failed: int = 0,
) -> World:
    """Insert the rows the emails need; sessions are on Google Meet already (migrated)."""
    tag = uuid.uuid4().hex[:6]
    tutor_id, switch_id = uuid.uuid4(), uuid.uuid4()
    zones = timezones or ["Europe/Berlin", "America/New_York", "Asia/Tokyo"]
    world = World(
        tutor_id,
        f"tutor-{tag}@example.test",
        switch_id,
        [],
        switch_state=switch_state,
        failed=failed,
    )
    total = sum(sessions_per_student)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, role, name, email, timezone)"
                " VALUES (:id, 'tutor', 'Ada Tutor', :email, 'Europe/London')"
            ),
            {"id": tutor_id, "email": world.tutor_email},
        )
        conn.execute(  # the gateway's request, then the migrator's progress row
            text(
                "INSERT INTO switch_requests (id, tutor_id, from_provider, to_provider,"
                " generation) VALUES (:id, :tutor, 'zoom', 'google_meet', 2)"
            ),
            {"id": switch_id, "tutor": tutor_id},
        )
        conn.execute(
            text(
                "INSERT INTO provider_switches (id, tutor_id, from_provider, to_provider,"
                " generation, state, sessions_total, sessions_migrated, sessions_failed)"
                " VALUES (:id, :tutor, 'zoom', 'google_meet', 2, :state, :total, :migrated,"
                " :failed)"
            ),
            {
                "id": switch_id,
                "tutor": tutor_id,
                "state": switch_state,
                "total": total,
                "migrated": total - failed,
                "failed": failed,
            },
        )
        n = 0
        for i, count in enumerate(sessions_per_student):
            student = Student(
                uuid.uuid4(),
                f"Student {i}",
                f"student{i}-{tag}@example.test",
                zones[i % len(zones)],
            )
            world.students.append(student)
            conn.execute(
                text(
                    "INSERT INTO users (id, role, name, email, timezone)"
                    " VALUES (:id, 'student', :name, :email, :tz)"
                ),
                {
                    "id": student.id,
                    "name": student.name,
                    "email": student.email,
                    "tz": student.timezone,
                },
            )
            for _ in range(count):
                n += 1
                booking_id, session_id = uuid.uuid4(), uuid.uuid4()
                starts = START + timedelta(days=n, hours=n)
                conn.execute(
                    text(
                        "INSERT INTO bookings (id, tutor_id, student_id, topic, duration_minutes)"
                        " VALUES (:id, :tutor, :student, :topic, 45)"
                    ),
                    {
                        "id": booking_id,
                        "tutor": tutor_id,
                        "student": student.id,
                        "topic": f"Algebra lesson {n}",
                    },
                )
                join_url = f"https://meet.google.com/abc-{tag}-{n:03d}"
                conn.execute(
                    text(
                        "INSERT INTO sessions (id, tutor_id, student_id, booking_id, provider,"
                        " meeting_external_id, join_url, scheduled_start_at, duration_minutes)"
                        " VALUES (:id, :tutor, :student, :booking, 'google_meet', :meeting,"
                        " :url, :starts, 45)"
                    ),
                    {
                        "id": session_id,
                        "tutor": tutor_id,
                        "student": student.id,
                        "booking": booking_id,
                        "meeting": f"abc-{tag}-{n:03d}",
                        "url": join_url,
                        "starts": starts,
                    },
                )
                failing = n > total - failed
                conn.execute(
                    text(
                        "INSERT INTO session_migrations (switch_id, session_id, tutor_id,"
                        " scheduled_start_at, state, attempts, from_provider, to_provider,"
                        " last_error, previous_meeting_external_id, previous_join_url,"
                        " new_meeting_external_id, new_join_url) VALUES (:switch, :session,"
                        " :tutor, :starts, :state, 1, 'zoom', 'google_meet', :error,"
                        " :old_meeting, :old_url, :meeting, :url)"
                    ),
                    {
                        "switch": switch_id,
                        "session": session_id,
                        "tutor": tutor_id,
                        "starts": starts,
                        "state": "FAILED" if failing else "MIGRATED",
                        "error": "quota_exceeded: daily meeting quota reached" if failing else None,
                        # what the migrator records: the meeting it left and the one it made
                        "old_meeting": OLD_ZOOM_MEETING,
                        "old_url": OLD_ZOOM_URL,
                        "meeting": None if failing else f"abc-{tag}-{n:03d}",
                        "url": None if failing else join_url,
                    },
                )
                world.sessions.append(
                    {
                        "id": session_id,
                        "student": student,
                        "booking_id": booking_id,
                        "starts": starts,
                        "join_url": join_url,
                        "meeting": f"abc-{tag}-{n:03d}",
                        "topic": f"Algebra lesson {n}",
                    }
                )
    return world


# The Zoom meeting every world session had before the switch (a rollback restores it).
OLD_ZOOM_MEETING = "81234567890"
OLD_ZOOM_URL = "https://zoom.us/j/81234567890"


def switched_event(world: World) -> events.Event:
    return events.new_event(
        "provider.switched",
        {
            "switch_id": str(world.switch_id),
            "tutor_id": str(world.tutor_id),
            "from_provider": "zoom",
            "to_provider": "google_meet",
            "generation": 2,
            "switched_at": datetime.now(UTC).isoformat(),
        },
        tutor_id=str(world.tutor_id),
        source="/relink/gateway",
    )


def migrated_event(world: World, session: dict[str, Any], *, kind: str = "switch") -> events.Event:
    back = kind == "rollback"
    return events.new_event(
        "session.migrated",
        {
            "switch_id": str(world.switch_id),
            "tutor_id": str(world.tutor_id),
            "session_id": str(session["id"]),
            "student_id": str(session["student"].id),
            "booking_id": str(session["booking_id"]),
            "scheduled_start_at": session["starts"].isoformat(),
            "kind": kind,
            "provider": "zoom" if back else "google_meet",
            "meeting_external_id": OLD_ZOOM_MEETING if back else session["meeting"],
            "join_url": OLD_ZOOM_URL if back else session["join_url"],
            "previous_provider": "google_meet" if back else "zoom",
            "previous_meeting_external_id": "x",
            "migrated_at": datetime.now(UTC).isoformat(),
        },
        tutor_id=str(world.tutor_id),
        source=SOURCE,
    )


def settled_event(world: World, *, state: str | None = None) -> events.Event:
    """The migrator's `switch.settled` for the world's switch, as its row says it settled."""
    failed = world.failed
    settled = SwitchSettled(
        switch_id=str(world.switch_id),
        tutor_id=str(world.tutor_id),
        state=state or world.switch_state,
        from_provider="zoom",
        to_provider="google_meet",
        sessions_total=len(world.sessions),
        sessions_migrated=len(world.sessions) - failed,
        sessions_failed=failed,
        sessions_skipped=0,
        settled_at=datetime.now(UTC),
    )
    return events.new_event(
        settled.TYPE, settled.to_payload(), tutor_id=str(world.tutor_id), source=SOURCE
    )


def failed_event(world: World, session: dict[str, Any]) -> events.Event:
    return events.new_event(
        "session.failed",
        {
            "switch_id": str(world.switch_id),
            "tutor_id": str(world.tutor_id),
            "session_id": str(session["id"]),
            "student_id": str(session["student"].id),
            "scheduled_start_at": session["starts"].isoformat(),
            "kind": "switch",
            "provider": "google_meet",
            "reason": "quota_exceeded",
            "detail": "daily meeting quota reached",
            "retryable": True,
            "attempts": 3,
            "failed_at": datetime.now(UTC).isoformat(),
        },
        tutor_id=str(world.tutor_id),
        source=SOURCE,
    )


def produce(settings: CommonSettings, batch: list[events.Event], *, times: int = 1) -> None:
    """Produce events to their real topics the way the relay does (binary CloudEvents)."""
    producer = Producer(producer_config(settings))
    for _ in range(times):
        for event in batch:
            message = events.to_message(event)
            headers: list[tuple[str, str | bytes | None]] = list(message.headers.items())
            producer.produce(
                events.topic_for(event.type, settings),
                key=message.key,
                value=message.value,
                headers=headers,
            )
    assert producer.flush(30) == 0


def produce_raw(
    settings: CommonSettings,
    topic: str,
    *,
    key: bytes,
    value: bytes,
    headers: list[tuple[str, str | bytes | None]],
) -> None:
    producer = Producer(producer_config(settings))
    producer.produce(topic, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0


def wait_for(condition: Callable[[], bool], *, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or condition}")


@contextmanager
def running_notifier(settings: NotifierSettings) -> Iterator[Any]:
    """The real consumer loop in a thread of this process."""
    loop = build_loop(settings)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            loop.run(stop=stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        stop.set()
        thread.join(30)
        loop.close()
        loop.notifier.db.engine.dispose()
    if errors:
        raise errors[0]


def start_notifier_process(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "notifier", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        cwd=os.getcwd(),
    )


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params))


def calendar_of(mail: Any) -> Any:
    """The calendar update a received email carries, parsed with `icalendar`, after checking
    it comes as calendar apps expect: a `text/calendar; method=…` alternative to the text
    and HTML bodies, and the same object as an `.ics` attachment."""
    from icalendar import Calendar

    message = mail.message
    inline = [
        p
        for p in message.walk()
        if p.get_content_type() == "text/calendar" and p.get_content_disposition() is None
    ]
    assert len(inline) == 1, [p.get_content_type() for p in message.walk()]
    (part,) = inline
    alternatives = next(
        p for p in message.walk() if p.get_content_type() == "multipart/alternative"
    )
    assert part in alternatives.get_payload(), "the calendar part is not an alternative body"
    ics = [a for a in mail.attachments() if a.filename.endswith(".ics")]
    assert len(ics) == 1, [a.filename for a in mail.attachments()]
    calendar = Calendar.from_ical(part.get_content())
    assert part.get_param("method") == calendar["method"]
    assert Calendar.from_ical(ics[0].data) == calendar
    return calendar
