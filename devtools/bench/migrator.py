"""`relink bench migrator`: sessions/s through the whole path, switch-to-done times, memory.

The whole path: switch rows and outbox rows committed in PostgreSQL, `relink
relay` publishing them, Kafka, `relink migrator` (Faust) creating meetings at
the provider simulator (its own process, 100 ms latency) over HTTP, session
updates and their outbox events. Every part is a real process; figures go to
benchmarks/results.json under `migrator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil
import psycopg

from devtools.bench.providers import connect, start_simulator, wait_until_serving
from devtools.bench.results import record
from devtools.devstack.settings import DevstackSettings
from devtools.provider_sim.server import free_port
from services.core import events
from services.core.db import migrate
from services.core.db.engine import libpq_conninfo
from services.core.kafka import create_topics, delete_topics
from services.core.settings import CommonSettings
from services.core.tokens import TokenCipher
from services.providers import ProviderSettings, TokenSet, build_client

FINAL = ("COMPLETED", "COMPLETED_WITH_FAILURES", "SUPERSEDED")
# throughput: sessions/s; switch: switch-to-done times; rss: memory while migrating.
PHASES = ("throughput", "switch", "rss")


@dataclass
class Target:
    url: str
    conninfo: str
    settings: CommonSettings
    env: dict[str, str]
    sim_url: str


@contextlib.contextmanager
def bench_target(*, concurrency: int) -> Iterator[Target]:
    """The devstack (started if needed), the simulator in its own process, a prepared database
    and topics; all taken down again afterwards. Shared with `relink bench migrator-sweep`."""
    from devtools.devstack.stack import Devstack

    stack = Devstack(DevstackSettings())
    report = stack.up()
    port = free_port()
    sim = start_simulator(port)
    sim_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(sim_url)
        target = _prepare(stack.database_url, stack.kafka_bootstrap, sim_url, concurrency)
        try:
            yield target
        finally:
            _cleanup(stack.database_url, target)
    finally:
        sim.terminate()
        sim.wait(10)
        stack.down(parts=tuple(report.started))


def set_latency(sim_url: str, latency_ms: int) -> None:
    """The simulator answers every provider call after `latency_ms`."""
    for provider in ("zoom", "google"):
        httpx.put(
            f"{sim_url}/_admin/faults/{provider}", json={"latency_ms": latency_ms}
        ).raise_for_status()


def run(
    *,
    tutors: int = 1000,
    sessions: int = 20,
    latency_ms: int = 100,
    concurrency: int = 50,
    big: int = 100_000,
    rss_seconds: float = 60.0,
    phases: tuple[str, ...] = PHASES,
) -> dict[str, Any]:
    """Measure the phases asked for and record them under `migrator`; return the figures."""
    with bench_target(concurrency=concurrency) as target:
        set_latency(target.sim_url, latency_ms)
        figures = _measure(
            target,
            tutors=tutors,
            sessions=sessions,
            latency_ms=latency_ms,
            concurrency=concurrency,
            big=big,
            rss_seconds=rss_seconds,
            phases=phases,
        )
    record("migrator", figures)
    return figures


def _prepare(server_url: str, bootstrap: str, sim_url: str, concurrency: int) -> Target:
    name = f"relink_bench_m_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_conninfo(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{server_url.rpartition('/')[0]}/{name}"
    migrate.upgrade(url)
    prefix = f"benchm{uuid.uuid4().hex[:6]}."
    settings = CommonSettings(
        DATABASE_URL=url, KAFKA_BOOTSTRAP_SERVERS=bootstrap, RELINK_TOPIC_PREFIX=prefix
    )
    create_topics(settings)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RELINK_TOPIC_PREFIX": prefix,
        "RELINK_LOG_LEVEL": "WARNING",
        "RELINK_ZOOM_AUTH_BASE": f"{sim_url}/zoom",
        "RELINK_ZOOM_API_BASE": f"{sim_url}/zoom/v2",
        "RELINK_GOOGLE_AUTH_BASE": f"{sim_url}/google",
        "RELINK_GOOGLE_TOKEN_BASE": f"{sim_url}/google",
        "RELINK_GOOGLE_API_BASE": f"{sim_url}/google",
        "RELINK_MIGRATOR_CONCURRENCY": str(concurrency),
        "RELINK_MIGRATOR_TUTOR_CONCURRENCY": "10",
        "RELINK_MIGRATOR_DATADIR": tempfile.mkdtemp(prefix="relink-migrator-bench-"),
        "RELINK_PROVIDER_MAX_CONNECTIONS": str(concurrency),
        # The simulator's daily cap is lifted for volume; so is the migrator's own
        # Zoom budget (0: none), or the 1,000-session tutor would wait for midnight.
        "RELINK_MIGRATOR_ZOOM_DAILY_CREATES": "0",
    }
    return Target(url, libpq_conninfo(url), settings, env, sim_url)


def _cleanup(server_url: str, target: Target) -> None:
    delete_topics(target.settings, target.settings.topics)
    name = target.url.rpartition("/")[2]
    with psycopg.connect(libpq_conninfo(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _spawn(command: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    relink = os.path.join(os.path.dirname(sys.executable), "relink")
    return subprocess.Popen([relink, command], env=env, stdout=subprocess.DEVNULL)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _measure(
    target: Target,
    *,
    tutors: int,
    sessions: int,
    latency_ms: int,
    concurrency: int,
    big: int,
    rss_seconds: float,
    phases: tuple[str, ...],
) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "tutors": tutors,
        "sessions_per_tutor": sessions,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "bound_sessions_per_s": round(concurrency / (latency_ms / 1000)),
    }
    relay = _spawn("relay", target.env)
    try:
        _phases(
            target,
            figures,
            rss_seconds=rss_seconds,
            big=big,
            tutors=tutors,
            sessions=sessions,
            phases=phases,
        )
    finally:
        _stop(relay)
    figures["command"] = "relink bench migrator"
    figures["note"] = (
        "bound = concurrency / latency. The default concurrency, 50, puts the bound (500/s) "
        "near what 2 cores serve: the whole path costs ~3.3 ms of CPU per session over all "
        "processes (cpu_us_per_session_by_process), so higher concurrency only queues "
        "(see migrator.sweep)"
    )
    return figures


def _phases(
    target: Target,
    figures: dict[str, Any],
    *,
    tutors: int,
    sessions: int,
    big: int,
    rss_seconds: float,
    phases: tuple[str, ...],
) -> None:
    if "throughput" in phases or "switch" in phases:
        _throughput_and_switch(target, figures, tutors=tutors, sessions=sessions, phases=phases)
    if "rss" in phases:
        _memory(target, figures, big=big, rss_seconds=rss_seconds)


def _throughput_and_switch(
    target: Target,
    figures: dict[str, Any],
    *,
    tutors: int,
    sessions: int,
    phases: tuple[str, ...],
) -> None:
    migrator = _spawn("migrator", target.env)
    try:
        time.sleep(5)  # the Faust worker joins its group
        if "throughput" in phases:
            _throughput(target, figures, tutors=tutors, sessions=sessions, pid=migrator.pid)
        if "switch" in phases:
            _switch_to_done(target, figures)
    finally:
        _stop(migrator)


def _throughput(
    target: Target, figures: dict[str, Any], *, tutors: int, sessions: int, pid: int
) -> None:
    print(f"migrator: {tutors} tutors x {sessions} sessions ...", flush=True)
    ids = _seed(target, tutors=tutors, sessions=sessions)
    started = time.monotonic()
    cpu = _cpu_seconds(pid)
    parts = cpu_by_part()
    _switch(target, ids)
    _wait_final(target, ids, timeout_s=1800)
    wall = time.monotonic() - started
    cpu = _cpu_seconds(pid) - cpu
    parts = {k: v - parts.get(k, 0.0) for k, v in cpu_by_part().items()}
    first, last, moved = _span(target, ids)
    figures["sessions_per_s"] = round(moved / (last - first).total_seconds(), 1)
    figures["sessions_migrated"] = moved
    figures["wall_s"] = round(wall, 1)
    # CPU time is steadier than wall time on cores shared with other work.
    figures["migrator_cpu_us_per_session"] = round(cpu / max(moved, 1) * 1e6)
    # Where the two cores go: every process of the path, per session migrated.
    figures["cpu_us_per_session_by_process"] = {
        k: round(v / max(moved, 1) * 1e6) for k, v in sorted(parts.items())
    }
    print(f"  CPU us/session by process: {figures['cpu_us_per_session_by_process']}")
    print(
        f"  {figures['sessions_per_s']} sessions/s ({moved} in {wall:.1f}s, "
        f"migrator {figures['migrator_cpu_us_per_session']} us CPU/session)",
        flush=True,
    )


def _switch_to_done(target: Target, figures: dict[str, Any]) -> None:
    p50: dict[str, float] = {}
    p99: dict[str, float] = {}
    for size, count in ((5, 20), (100, 5), (1000, 2)):
        ids = _seed(target, tutors=count, sessions=size)
        _switch(target, ids)
        _wait_final(target, ids, timeout_s=1800)
        times = _switch_times(target, ids)
        p50[str(size)] = round(statistics.median(times), 2)
        p99[str(size)] = round(_percentile(times, 0.99), 2)
        print(f"  {size} sessions: p50 {p50[str(size)]}s p99 {p99[str(size)]}s", flush=True)
    figures["switch_to_done_p50_s"] = p50
    figures["switch_to_done_p99_s"] = p99
    figures["switch_to_done_samples"] = {"5": 20, "100": 5, "1000": 2}


def _memory(target: Target, figures: dict[str, Any], *, big: int, rss_seconds: float) -> None:
    rss: dict[str, float] = {}
    done: dict[str, int] = {}
    for size in (100, big):
        migrator = _spawn("migrator", target.env)
        try:
            time.sleep(5)
            print(f"migrator: memory while migrating {size} sessions ...", flush=True)
            ids = _seed(target, tutors=1, sessions=size)
            _switch(target, ids)
            peak, migrated = _watch_rss(target, ids, pid=migrator.pid, seconds=rss_seconds)
            rss[str(size)] = peak
            done[str(size)] = migrated
            print(f"  peak rss {peak} MB ({migrated} migrated while watched)", flush=True)
        finally:
            _stop(migrator)
    figures["rss_mb"] = rss
    figures["rss_sessions_migrated_while_watched"] = done
    figures["rss_watch_s"] = rss_seconds


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _part_of(process: psutil.Process) -> str | None:
    """Which part of the measured path a process is (None: not ours)."""
    if process.pid == os.getpid():
        return "bench"
    try:
        name = process.name()
        argv = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if name.startswith("postgres"):
        return "postgresql"
    if name == "java" and any("kafka" in a for a in argv):
        return "kafka"
    if "devtools.provider_sim" in argv:
        return "simulator"
    if len(argv) >= 2 and os.path.basename(argv[1] if "python" in argv[0] else argv[0]) == (
        "relink"
    ):
        command = argv[2] if "python" in argv[0] else argv[1]
        return command if command in ("relay", "migrator") else None
    return None


def cpu_by_part() -> dict[str, float]:
    """CPU seconds so far of every process on the path, summed per part."""
    totals: dict[str, float] = {}
    for process in psutil.process_iter():
        part = _part_of(process)
        if part is None:
            continue
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = process.cpu_times()
            totals[part] = totals.get(part, 0.0) + times.user + times.system
    return totals


def _tokens(target: Target, count: int) -> list[TokenSet]:
    async def go() -> list[TokenSet]:
        settings = ProviderSettings(
            zoom_auth_base=f"{target.sim_url}/zoom", zoom_api_base=f"{target.sim_url}/zoom/v2"
        )
        async with (
            build_client("zoom", settings=settings) as client,
            httpx.AsyncClient(timeout=30) as http,
        ):
            gate = asyncio.Semaphore(20)

            async def one() -> TokenSet:
                async with gate:
                    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
                    return await connect(client, http, email)

            return list(await asyncio.gather(*(one() for _ in range(count))))

    return asyncio.run(go())


def _seed(target: Target, *, tutors: int, sessions: int) -> list[str]:
    """Tutors on Google Meet with future sessions, each with real Zoom tokens; their ids."""
    cipher: TokenCipher = target.settings.token_cipher()
    tokens = _tokens(target, tutors)
    tutor_ids = [uuid.uuid4() for _ in range(tutors)]
    student_ids = [uuid.uuid4() for _ in range(tutors)]
    with psycopg.connect(target.conninfo) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO users (id, role, name, email) VALUES (%s, %s, %s, %s)",
            [(t, "tutor", "Bench Tutor", f"t-{t.hex}@example.com") for t in tutor_ids]
            + [(s, "student", "Bench Student", f"s-{s.hex}@example.com") for s in student_ids],
        )
        cur.executemany(
            "INSERT INTO tutor_video_provider_connections (tutor_id, provider, generation, "
            "access_token_encrypted, refresh_token_encrypted, token_expires_at) "
            "VALUES (%s, 'google_meet', 1, %s, %s, %s)",
            [
                (
                    t,
                    cipher.encrypt(tok.access_token, tutor_id=t, field="access_token"),
                    cipher.encrypt(tok.refresh_token or "", tutor_id=t, field="refresh_token"),
                    tok.expires_at,
                )
                for t, tok in zip(tutor_ids, tokens, strict=True)
            ],
        )
        cur.execute(
            "INSERT INTO bookings (id, tutor_id, student_id, topic, duration_minutes) "
            "SELECT gen_random_uuid(), t.tutor, t.student, 'Lesson ' || g, 45 "
            "FROM unnest(%s::uuid[], %s::uuid[]) AS t(tutor, student), "
            "generate_series(1, %s) AS g",
            (tutor_ids, student_ids, sessions),
        )
        cur.execute(
            "INSERT INTO sessions (id, tutor_id, student_id, booking_id, provider, "
            "meeting_external_id, join_url, status, scheduled_start_at, duration_minutes) "
            "SELECT gen_random_uuid(), b.tutor_id, b.student_id, b.id, 'google_meet', "
            "'old-' || b.id, "
            "'https://meet.google.com/old', 'SCHEDULED', now() + interval '1 day' + "
            "row_number() OVER (PARTITION BY b.tutor_id ORDER BY b.id) * interval '1 minute', 45 "
            "FROM bookings b WHERE b.tutor_id = ANY(%s)",
            (tutor_ids,),
        )
        conn.commit()
    return [str(t) for t in tutor_ids]


def _switch(target: Target, tutor_ids: list[str]) -> None:
    """What the gateway commits for each tutor: connection, switch row, outbox row."""
    with psycopg.connect(target.conninfo) as conn, conn.cursor() as cur:
        for tutor in tutor_ids:
            switch_id = uuid.uuid4()
            cur.execute(
                "UPDATE tutor_video_provider_connections SET provider = 'zoom', generation = 2 "
                "WHERE tutor_id = %s",
                (tutor,),
            )
            cur.execute(  # the gateway's request: the migrator makes the progress row
                "INSERT INTO switch_requests (id, tutor_id, from_provider, to_provider, "
                "generation) VALUES (%s, %s, 'google_meet', 'zoom', 2)",
                (switch_id, tutor),
            )
            row = events.outbox_row(
                "provider.switched",
                {
                    "switch_id": str(switch_id),
                    "tutor_id": tutor,
                    "from_provider": "google_meet",
                    "to_provider": "zoom",
                    "generation": 2,
                    "switched_at": datetime.now(UTC).isoformat(),
                },
                tutor_id=tutor,
                source="/relink/bench",
                topics=target.settings,
            )
            cur.execute(
                "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic, "
                "payload, headers) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    row["event_id"],
                    row["aggregate_type"],
                    row["aggregate_id"],
                    row["event_type"],
                    row["topic"],
                    json.dumps(row["payload"]),
                    json.dumps(row["headers"]),
                ),
            )
            # One commit per switch, as the gateway's callbacks would make them.
            conn.commit()


def _final_count(conn: psycopg.Connection[Any], tutor_ids: list[str]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM provider_switches WHERE tutor_id = ANY(%s) AND state = ANY(%s)",
        (tutor_ids, list(FINAL)),
    ).fetchone()
    return int(row[0]) if row else 0


def _wait_final(target: Target, tutor_ids: list[str], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    # One polling connection: a new one every half second forks a backend each
    # time, CPU the measured pipeline would pay for.
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        while _final_count(conn, tutor_ids) < len(tutor_ids):
            if time.monotonic() > deadline:
                raise RuntimeError("switches did not finish in time")
            time.sleep(0.5)


def _span(target: Target, tutor_ids: list[str]) -> tuple[datetime, datetime, int]:
    with psycopg.connect(target.conninfo) as conn:
        row = conn.execute(
            "SELECT min(created_at), max(completed_at), sum(sessions_migrated) "
            "FROM provider_switches WHERE tutor_id = ANY(%s)",
            (tutor_ids,),
        ).fetchone()
    assert row is not None
    return row[0], row[1], int(row[2])


def _switch_times(target: Target, tutor_ids: list[str]) -> list[float]:
    with psycopg.connect(target.conninfo) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM completed_at - created_at) FROM provider_switches "
            "WHERE tutor_id = ANY(%s)",
            (tutor_ids,),
        ).fetchall()
    return [float(r[0]) for r in rows]


def _watch_rss(
    target: Target, tutor_ids: list[str], *, pid: int, seconds: float
) -> tuple[float, int]:
    process = psutil.Process(pid)
    peak = 0.0
    deadline = time.monotonic() + seconds
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        while time.monotonic() < deadline and _final_count(conn, tutor_ids) < len(tutor_ids):
            peak = max(peak, process.memory_info().rss / 2**20)
            time.sleep(0.5)
        row = conn.execute(
            "SELECT sum(sessions_migrated) FROM provider_switches WHERE tutor_id = ANY(%s)",
            (tutor_ids,),
        ).fetchone()
    return round(peak, 1), int(row[0] or 0) if row else 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
