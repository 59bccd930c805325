"""`relink bench relay`: throughput, naive baseline, latency and memory of the relay.

First the peer's way (devtools/bench/peer.py: rows COPYed in 1,000-row
transactions, a 300 B payload over 1,000 keys, a one-partition topic, no
VACUUM, counted from the process launch and first -> last record, CPU of the
relay and of PostgreSQL), recorded under the `peer_way_*` keys; then, unless
`--no-classic`, the older figures under their old keys.

Runs against the devstack (started if needed, via the same `Devstack` the test
fixtures use), in a database and topics of its own, and records the figures
under `relay` in benchmarks/results.json.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psutil
import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition

from devtools.bench import peer
from devtools.bench.results import record
from devtools.devstack.settings import DevstackSettings
from services.core import events
from services.core.db import migrate
from services.core.db.engine import libpq_conninfo
from services.core.kafka import create_topics, delete_topics
from services.core.settings import CommonSettings
from services.relay.adapters.kafka import relay_producer_config

TUTORS = 1000
LATENCY_NOTE = (
    "broker LogAppendTime (1 ms resolution, truncated) minus pg_xact_commit_timestamp of the"
    " inserting transaction; one event per transaction, relay woken by NOTIFY"
)
_INSERT = f"""
INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic, payload, headers)
SELECT gen_random_uuid(), 'tutor', 'tutor-' || (g %% {TUTORS}), 'provider.switched', %(topic)s,
       jsonb_build_object('switch_id', gen_random_uuid(), 'tutor_id', 'tutor-' || (g %% {TUTORS}),
           'from_provider', 'zoom', 'to_provider', 'google_meet', 'generation', g,
           'switched_at', %(now)s::text),
       jsonb_build_object('source', '/relink/bench', 'subject', 'tutor-' || (g %% {TUTORS}),
           'time', %(now)s::text, 'specversion', '1.0', 'dataschema', %(schema)s::text)
FROM generate_series(%(start)s::int, %(stop)s::int) AS g
"""


@dataclass
class BenchTarget:
    database_url: str
    conninfo: str
    settings: CommonSettings
    env: dict[str, str]


def run(
    *,
    rows: int = 100_000,
    big_rows: int = 1_000_000,
    naive_s: float = 20.0,
    classic: bool = True,
) -> dict[str, Any]:
    """Measure everything and record it; return the figures."""
    from devtools.devstack.stack import Devstack

    stack = Devstack(DevstackSettings())
    report = stack.up()
    try:
        target = _prepare(stack.database_url, stack.kafka_bootstrap)
        try:
            figures = _peer_way(target, rows=rows)
            if classic:
                figures |= _measure(target, rows=rows, big_rows=big_rows, naive_s=naive_s)
        finally:
            _cleanup(stack.database_url, target)
    finally:
        stack.down(parts=tuple(report.started))
    record("relay", figures)
    return figures


def _prepare(server_url: str, bootstrap: str) -> BenchTarget:
    name = f"relink_bench_{uuid.uuid4().hex[:8]}"
    admin = libpq_conninfo(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = server_url.rpartition("/")
    url = f"{base}/{name}"
    migrate.upgrade(url)
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = CommonSettings(
        DATABASE_URL=url, KAFKA_BOOTSTRAP_SERVERS=bootstrap, RELINK_TOPIC_PREFIX=prefix
    )
    # LogAppendTime: the broker stamps each message when it appends it, which
    # is the "published" instant the latency figure needs.
    create_topics(settings, extra_config={"message.timestamp.type": "LogAppendTime"})
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RELINK_TOPIC_PREFIX": prefix,
        "RELINK_LOG_LEVEL": "WARNING",
    }
    return BenchTarget(url, libpq_conninfo(url), settings, env)


def _cleanup(server_url: str, target: BenchTarget) -> None:
    delete_topics(target.settings, target.settings.topics)
    name = target.database_url.rpartition("/")[2]
    with psycopg.connect(libpq_conninfo(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _peer_way(target: BenchTarget, *, rows: int) -> dict[str, Any]:
    """The relay measured as the peer is (devtools/bench/peer.py), on an empty outbox."""
    print(f"relay: the peer's way, {rows} rows COPYed, from launch ...", flush=True)
    figures = peer.measure_relink(
        database_url=target.database_url,
        conninfo=target.conninfo,
        bootstrap=target.settings.kafka_bootstrap_servers,
        prefix=f"{target.settings.topic_prefix}pw.",
        rows=rows,
    )
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        conn.execute("TRUNCATE outbox")
    print(
        f"  {figures['eps_from_launch']}/s from launch, {figures['eps_streaming']}/s streaming,"
        f" {figures['cpu_s_per_100k']} CPU-s/100k (PostgreSQL"
        f" {figures['postgres_cpu_s_per_100k']})",
        flush=True,
    )
    return {
        "peer_way_eps_from_launch": figures["eps_from_launch"],
        "peer_way_eps_streaming": figures["eps_streaming"],
        "peer_way_launch_to_first_s": figures["launch_to_first_s"],
        "peer_way_cpu_s_per_100k": figures["cpu_s_per_100k"],
        "peer_way_postgres_cpu_s_per_100k": figures["postgres_cpu_s_per_100k"],
        "peer_way_basis": peer.BASIS | {"rows": rows, "payload_bytes": figures["payload_bytes"]},
        "peer_way_command": f"relink bench relay --rows {rows}",
    }


def _measure(target: BenchTarget, *, rows: int, big_rows: int, naive_s: float) -> dict[str, Any]:
    figures: dict[str, Any] = {"rows": rows, "tutors": TUTORS}
    _fill(target, rows)
    print(f"relay: draining {rows} rows ...", flush=True)
    rss_100k = _run_relay(target, until_idle=True)
    figures["throughput_eps"] = round(_throughput(target))
    figures["rss_mb_100k"] = rss_100k
    print(f"  throughput {figures['throughput_eps']}/s, rss {rss_100k} MB", flush=True)

    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        conn.execute("UPDATE outbox SET published_at = NULL")
        conn.execute("VACUUM ANALYZE outbox")
    print(f"relay: naive one-row-at-a-time for {naive_s:.0f}s on the same rows ...", flush=True)
    figures["naive_throughput_eps"] = round(_naive(target, seconds=naive_s))
    figures["naive_time_box_s"] = naive_s
    print(f"  naive {figures['naive_throughput_eps']}/s", flush=True)

    figures |= _latency(target)
    print(f"  latency p50 {figures['latency_p50_ms']} ms p99 {figures['latency_p99_ms']} ms")

    if big_rows:
        with psycopg.connect(target.conninfo, autocommit=True) as conn:
            conn.execute("TRUNCATE outbox")
        _fill(target, big_rows)
        print(f"relay: memory with {big_rows} rows waiting (30 s) ...", flush=True)
        figures["rss_mb_1m"] = _run_relay(target, until_idle=False, seconds=30)
        figures["big_rows"] = big_rows
        print(f"  rss {figures['rss_mb_1m']} MB", flush=True)
    figures["command"] = "relink bench relay"
    return figures


def _fill(target: BenchTarget, rows: int) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    schema = events.schema_uri("provider.switched")
    chunk = 100_000
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        for start in range(1, rows + 1, chunk):
            conn.execute(
                _INSERT,
                {
                    "topic": target.settings.topic_provider_switched,
                    "now": now,
                    "schema": schema,
                    "start": start,
                    "stop": min(rows, start + chunk - 1),
                },
            )
        conn.execute("VACUUM ANALYZE outbox")


def _relay_command() -> list[str]:
    return [os.path.join(os.path.dirname(sys.executable), "relink"), "relay"]


def _run_relay(target: BenchTarget, *, until_idle: bool, seconds: float = 0.0) -> float:
    """Run `relink relay` as a process; return its peak resident memory in MB."""
    command = (
        [*_relay_command(), "--until-idle", "--idle-seconds", "0"]
        if until_idle
        else _relay_command()
    )
    process = subprocess.Popen(command, env=target.env)
    handle = psutil.Process(process.pid)
    peak = 0.0
    deadline = time.monotonic() + seconds
    while process.poll() is None:
        try:
            peak = max(peak, handle.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            break
        if not until_idle and time.monotonic() > deadline:
            process.terminate()
            process.wait(timeout=30)
            break
        time.sleep(0.2)
    if until_idle and process.returncode != 0:
        raise RuntimeError(f"relay exited with {process.returncode}")
    return round(peak, 1)


def _throughput(target: BenchTarget) -> float:
    """Rows per second between the first and the last batch's mark."""
    with psycopg.connect(target.conninfo) as conn:
        row = conn.execute(
            "SELECT count(*), extract(epoch FROM max(published_at) - min(published_at))"
            " FROM outbox WHERE published_at IS NOT NULL"
        ).fetchone()
    assert row is not None
    count, span = int(row[0]), float(row[1] or 0)
    return count / span if span > 0 else float("nan")


def _naive(target: BenchTarget, *, seconds: float) -> float:
    """Select one row, publish it, wait for the ack, mark it, commit; repeat."""
    producer = Producer(relay_producer_config(target.settings, linger_ms=0, delivery_timeout_s=10))
    published = 0
    start = time.monotonic()
    with psycopg.connect(target.conninfo) as conn:
        while time.monotonic() - start < seconds:
            with conn.transaction():
                row = conn.execute(
                    "SELECT id, event_id, aggregate_id, event_type, topic, payload::text, headers"
                    " FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 1"
                    " FOR UPDATE SKIP LOCKED"
                ).fetchone()
                if row is None:
                    break
                message = events.outbox_message(
                    event_id=row[1],
                    event_type=row[3],
                    aggregate_id=row[2],
                    payload=row[5].encode(),
                    headers=row[6],
                )
                producer.produce(
                    row[4], key=message.key, value=message.value,
                    headers=list(message.headers.items()),
                )  # fmt: skip
                if producer.flush(10) != 0:
                    raise RuntimeError("naive relay: no ack")
                conn.execute("UPDATE outbox SET published_at = now() WHERE id = %s", (row[0],))
            published += 1
    return published / (time.monotonic() - start)


def _latency(target: BenchTarget, *, rate: int = 500, seconds: float = 20.0) -> dict[str, Any]:
    """Commit-to-append latency at a steady rate, one event per transaction."""
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        conn.execute("TRUNCATE outbox")
    topic = f"{target.settings.topic_prefix}latency.provider.switched"
    create_topics(
        target.settings,
        names=[topic],
        extra_config={"message.timestamp.type": "LogAppendTime"},
    )
    process = subprocess.Popen(_relay_command(), env=target.env)
    xids: dict[str, int] = {}
    try:
        time.sleep(2.0)  # let the relay connect and lease its slots
        print(f"relay: latency at {rate} events/s for {seconds:.0f}s ...", flush=True)
        xids = _steady_writer(target, topic=topic, rate=rate, seconds=seconds)
        appended = _append_times(target.settings.kafka_bootstrap_servers, topic, len(xids))
    finally:
        process.terminate()
        process.wait(timeout=30)
    with psycopg.connect(target.conninfo) as conn:
        commits: dict[int, float] = dict(
            conn.execute(
                "SELECT x, extract(epoch FROM pg_xact_commit_timestamp(x::text::xid)) * 1000"
                " FROM unnest(%s::bigint[]) AS x",
                (list(xids.values()),),
            ).fetchall()
        )
    latencies = sorted(appended[event_id] - float(commits[xid]) for event_id, xid in xids.items())
    delete_topics(target.settings, [topic])
    return {
        "latency_p50_ms": round(statistics.median(latencies), 1),
        "latency_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1),
        "latency_max_ms": round(latencies[-1], 1),
        "latency_rate_eps": rate,
        "latency_events": len(latencies),
        "latency_note": LATENCY_NOTE,
    }


def _steady_writer(target: BenchTarget, *, topic: str, rate: int, seconds: float) -> dict[str, int]:
    """Insert one outbox row per transaction at `rate`/s; return event id -> its xid."""
    settings = target.settings
    xids: dict[str, int] = {}
    total = int(rate * seconds)
    start = time.monotonic()
    with psycopg.connect(target.conninfo) as conn:
        for n in range(total):
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            tutor = f"tutor-{n % TUTORS}"
            values = events.outbox_row(
                "provider.switched",
                {
                    "switch_id": str(uuid.uuid4()),
                    "tutor_id": tutor,
                    "from_provider": "zoom",
                    "to_provider": "google_meet",
                    "generation": n + 1,
                    "switched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                tutor_id=tutor,
                source="/relink/bench",
                topics=settings,
            )
            row = conn.execute(
                "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic,"
                " payload, headers) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " RETURNING xmin::text::bigint",
                (
                    values["event_id"],
                    values["aggregate_type"],
                    values["aggregate_id"],
                    values["event_type"],
                    topic,
                    psycopg.types.json.Jsonb(values["payload"]),
                    psycopg.types.json.Jsonb(values["headers"]),
                ),
            ).fetchone()
            conn.commit()
            assert row is not None
            xids[str(values["event_id"])] = int(row[0])
    return xids


def _append_times(bootstrap: str, topic: str, expected: int) -> dict[str, float]:
    """ce_id -> the broker's LogAppendTime in ms."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
    stamps: dict[str, float] = {}
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + 60
        while len(stamps) < expected and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error():
                    continue
                headers = dict(message.headers() or [])
                event_id = headers["ce_id"]
                if isinstance(event_id, bytes):
                    stamps[event_id.decode()] = float(message.timestamp()[1])
    finally:
        consumer.close()
    if len(stamps) < expected:
        raise RuntimeError(f"only {len(stamps)} of {expected} latency events arrived")
    return stamps
