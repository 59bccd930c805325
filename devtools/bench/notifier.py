"""`relink bench notifier`: audit replay throughput and memory, email delivery rate.

Runs against the devstack in a database and topics of its own, and records
`replay_eps`, `replay_rss_mb` and `emails_per_s` under `notifier` in
benchmarks/results.json.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import psycopg
from confluent_kafka import Producer

from devtools.bench.results import record
from devtools.devstack.settings import DevstackSettings
from devtools.smtp_sink.sink import SmtpSink
from services.core import events
from services.core.db import migrate
from services.core.kafka import create_topics, delete_topics, producer_config
from services.core.settings import CommonSettings

TUTORS = 1000


def run(*, replay_events: int = 1_000_000, emails: int = 1000) -> dict[str, Any]:
    """Measure and record; return the figures."""
    from devtools.devstack.stack import Devstack

    stack = Devstack(DevstackSettings())
    report = stack.up()
    name = f"relink_bench_{uuid.uuid4().hex[:8]}"
    admin = _libpq(stack.database_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{stack.database_url.rpartition('/')[0]}/{name}"
    settings = CommonSettings(
        DATABASE_URL=url,
        KAFKA_BOOTSTRAP_SERVERS=stack.kafka_bootstrap,
        RELINK_TOPIC_PREFIX=f"bench{uuid.uuid4().hex[:6]}.",
    )
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "RELINK_TOPIC_PREFIX": settings.topic_prefix,
        "RELINK_LOG_LEVEL": "WARNING",
    }
    try:
        migrate.upgrade(url)
        create_topics(settings)
        figures = {"replay_events": replay_events, **_replay(settings, env, replay_events)}
        # the email run gets topics of its own: its notifier must not wade through
        # the replay's million events first
        mail_settings = settings.model_copy(
            update={"topic_prefix": f"{settings.topic_prefix}mail."}
        )
        create_topics(mail_settings)
        try:
            mail_env = {**env, "RELINK_TOPIC_PREFIX": mail_settings.topic_prefix}
            figures.update(_emails(mail_settings, mail_env, emails))
        finally:
            delete_topics(mail_settings, mail_settings.topics)
    finally:
        delete_topics(settings, settings.topics)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        stack.down(parts=tuple(report.started))
    record("notifier", figures)
    print(figures)
    return figures


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


Template = tuple[str, Any, bytes, dict[str, str | bytes | None]]


def _templates(settings: CommonSettings) -> list[Template]:
    """A few real events per tutor shape; each produced message gets its own ce_id."""
    out = []
    for n in range(TUTORS):
        tutor = str(uuid.uuid4())
        switch = str(uuid.uuid4())
        now = datetime.now(UTC).isoformat()
        payload = {
            "switch_id": switch, "tutor_id": tutor, "session_id": str(uuid.uuid4()),
            "student_id": str(uuid.uuid4()), "booking_id": None,
            "scheduled_start_at": (datetime.now(UTC) + timedelta(days=n % 30 + 1)).isoformat(),
            "kind": "switch", "provider": "google_meet", "meeting_external_id": f"m-{n}",
            "join_url": f"https://meet.google.com/m-{n}", "previous_provider": "zoom",
            "previous_meeting_external_id": f"z-{n}", "migrated_at": now,
        }  # fmt: skip
        event = events.new_event("session.migrated", payload, tutor_id=tutor, source="/bench")
        message = events.to_message(event)
        headers: dict[str, str | bytes | None] = dict(message.headers.items())
        out.append((settings.topic_session_migrated, message.key, message.value, headers))
    return out


def _produce(settings: CommonSettings, count: int) -> float:
    templates = _templates(settings)
    producer = Producer(
        producer_config(settings, **{"linger.ms": 50, "queue.buffering.max.messages": 500_000})
    )
    started = time.monotonic()
    for i in range(count):
        topic, key, value, headers = templates[i % len(templates)]
        fresh: list[tuple[str, str | bytes | None]] = list(
            {**headers, "ce_id": str(uuid.uuid4()).encode()}.items()
        )
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=fresh)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(300) != 0:
        raise RuntimeError("events not acknowledged")
    return time.monotonic() - started


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Run a relink command; its wall time, peak resident memory (MB) and CPU seconds.

    CPU is the process tree's user+system time (last sample of each process):
    unlike the wall time it hardly moves when other work shares the cores.
    """
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    handle = psutil.Process(process.pid)
    peak = 0.0
    cpu: dict[int, float] = {}
    while process.poll() is None:
        try:
            # the parse workers count too: the whole process tree
            tree = [handle, *handle.children(recursive=True)]
            peak = max(peak, sum(_rss(p) for p in tree) / 2**20)
            cpu.update((p.pid, _cpu(p, cpu.get(p.pid, 0.0))) for p in tree)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    out = process.stdout.read().decode() if process.stdout else ""
    if process.returncode != 0:
        raise RuntimeError(f"{command} exited with {process.returncode}: {out}")
    print(out.strip(), flush=True)
    return elapsed, peak, sum(cpu.values())


def _cpu(process: psutil.Process, last: float) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return last
    return float(times.user + times.system)


def _rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.NoSuchProcess:
        return 0


def _replay(settings: CommonSettings, env: dict[str, str], count: int) -> dict[str, Any]:
    print(f"notifier: producing {count} events ...", flush=True)
    produce_s = _produce(settings, count)
    print(f"notifier: produced in {produce_s:.1f}s; replaying ...", flush=True)
    elapsed, peak, cpu_s = _timed(["audit", "replay"], env)
    with psycopg.connect(_libpq(settings.database_url)) as conn:
        rows = conn.execute("SELECT count(*) FROM audit_log").fetchone()
    if rows is None or rows[0] != count:
        raise RuntimeError(f"replay wrote {rows} rows, expected {count}")
    return {
        "replay_eps": round(count / elapsed),
        "replay_s": round(elapsed, 1),
        "replay_rss_mb": round(peak, 1),
        "replay_cpu_us_per_event": round(cpu_s / count * 1e6, 1),
        "replay_note": "wall time of `relink audit replay` incl. process start, RSS and "
        "CPU (user+system) of its process tree (parse workers included; PostgreSQL's "
        "and Kafka's own CPU not counted); "
        "session.migrated events, 1000 tutors, 6 partitions",
    }


def _emails(settings: CommonSettings, env: dict[str, str], count: int) -> dict[str, Any]:
    """`count` session.migrated events with their rows; time the notifier's deliveries."""
    tutor, switch = uuid.uuid4(), uuid.uuid4()
    batch = []
    with psycopg.connect(_libpq(settings.database_url)) as conn:
        conn.execute(
            "INSERT INTO users (id, role, name, email) VALUES (%s, 'tutor', 'Bench Tutor',"
            " 'bench-tutor@example.test')", (tutor,),
        )  # fmt: skip
        conn.execute(
            "INSERT INTO switch_requests (id, tutor_id, from_provider, to_provider, generation)"
            " VALUES (%s, %s, 'zoom', 'google_meet', 2)", (switch, tutor),
        )  # fmt: skip
        conn.execute(
            "INSERT INTO provider_switches (id, tutor_id, from_provider, to_provider, generation,"
            " state) VALUES (%s, %s, 'zoom', 'google_meet', 2, 'MIGRATING')", (switch, tutor),
        )  # fmt: skip
        for n in range(count):
            student, booking, session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
            starts = datetime.now(UTC) + timedelta(days=1, minutes=n)
            conn.execute(
                "INSERT INTO users (id, role, name, email, timezone) VALUES"
                " (%s, 'student', %s, %s, 'Europe/Berlin')",
                (student, f"Student {n}", f"student{n}@example.test"),
            )
            conn.execute(
                "INSERT INTO bookings (id, tutor_id, student_id, topic, duration_minutes)"
                " VALUES (%s, %s, %s, %s, 60)", (booking, tutor, student, f"Lesson {n}"),
            )  # fmt: skip
            conn.execute(
                "INSERT INTO sessions (id, tutor_id, student_id, booking_id, provider,"
                " join_url, scheduled_start_at, duration_minutes) VALUES"
                " (%s, %s, %s, %s, 'google_meet', %s, %s, 60)",
                (session, tutor, student, booking, f"https://meet.google.com/b-{n}", starts),
            )
            batch.append(
                events.new_event(
                    "session.migrated",
                    {
                        "switch_id": str(switch),
                        "tutor_id": str(tutor),
                        "session_id": str(session),
                        "student_id": str(student),
                        "scheduled_start_at": starts.isoformat(),
                        "kind": "switch",
                        "provider": "google_meet",
                        "meeting_external_id": f"b-{n}",
                        "join_url": f"https://meet.google.com/b-{n}",
                        "previous_provider": "zoom",
                        "migrated_at": datetime.now(UTC).isoformat(),
                    },
                    tutor_id=str(tutor),
                    source="/bench",
                )
            )
    producer = Producer(producer_config(settings))
    for event in batch:
        message = events.to_message(event)
        headers: list[tuple[str, str | bytes | None]] = list(message.headers.items())
        producer.produce(
            settings.topic_session_migrated, key=message.key, value=message.value, headers=headers
        )
    producer.flush(60)
    with SmtpSink() as sink:
        mail_env = {
            **env,
            "RELINK_SMTP_PORT": str(sink.port),
            "RELINK_NOTIFIER_GROUP_ID": f"bench-{uuid.uuid4().hex[:6]}",
        }
        print(f"notifier: sending {count} emails ...", flush=True)
        _timed(["notifier", "--until-idle", "--idle-seconds", "2"], mail_env)
        received = len(sink.mails())
    with psycopg.connect(_libpq(settings.database_url)) as conn:
        row = conn.execute(
            "SELECT count(*), EXTRACT(EPOCH FROM max(sent_at) - min(sent_at))"
            " FROM notifications WHERE state = 'SENT'"
        ).fetchone()
    assert row is not None
    sent, span = int(row[0]), float(row[1] or 0.0)
    if sent != count or received != count:
        raise RuntimeError(f"{sent} marked sent and {received} received, expected {count}")
    return {
        "emails": count,
        "emails_per_s": round((count - 1) / span, 1) if span else None,
        "emails_note": "first to last SENT mark, one SMTP connection, aiosmtpd sink in the "
        "bench process writing no files",
    }
