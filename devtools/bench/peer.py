"""The relay measured the way a peer measures it, and `relink bench peer`: the real peer beside it.

The basis (the same for relink's relay and for the peer):

- rows pre-inserted by COPY in 1,000-row transactions into relink's `outbox`
  table, a 300 B payload (the jsonb's text) over 1,000 keys;
- one topic of one partition per measurement, named as relink names it
  (`<RELINK_TOPIC_PREFIX>provider.switched`), broker LogAppendTime;
- no VACUUM before draining;
- throughput counted from the process launch (wall clock just before the
  process is started) to the broker append time of the last record, and
  from the first record's append time to the last's ("streaming");
- CPU-seconds per 100k events of the process (from launch to the moment the
  last record was seen) and of PostgreSQL (every process under the
  postmaster, sampled during the run; a backend that ends keeps its last
  sample).

The peer is Debezium's PostgreSQL connector (pgoutput) with the Outbox Event
Router SMT in Kafka Connect standalone, its jars pinned in
devtools/bench/peer/pom.xml and fetched from Maven Central with `mvn` once into
the devstack home. It needs `wal_level=logical`, so the bench starts a
PostgreSQL of its own (port 55452 by default, data under the devstack home)
and measures BOTH there, on the same settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from devtools.bench.results import record
from devtools.devstack.errors import DevstackError, ToolMissingError
from devtools.devstack.postgres import SUPERUSER, EmbeddedPostgres
from devtools.devstack.processes import tail
from devtools.devstack.settings import DevstackSettings
from services.core import events
from services.core.db import migrate

KEYS = 1000
PAYLOAD_BYTES = 300
COPY_BATCH = 1000
PARTITIONS = 1
PEER_PG_PORT = 55452
CONNECT_REST_PORT = 18451
POM = Path(__file__).parent / "peer" / "pom.xml"
TUNED = {"poll.interval.ms": "10"}
BASIS = {
    "insert": f"COPY, {COPY_BATCH}-row transactions, before the process starts",
    "payload_bytes": PAYLOAD_BYTES,
    "keys": KEYS,
    "partitions": PARTITIONS,
    "vacuum": False,
    "from_launch": "launch -> broker LogAppendTime of the last record",
    "streaming": "LogAppendTime of the first record -> of the last",
    "cpu": "CPU-s per 100k events, launch -> last record seen (psutil)",
    "postgres_cpu": "CPU-s per 100k events of every process under the postmaster",
}


def event_id(n: int) -> str:
    """The event id of row n (1-based): deterministic, so a reader can check every id."""
    return str(uuid.UUID(int=(0xB0 << 120) | n))


def _payload(n: int, now: str) -> str:
    tutor = f"tutor-{n % KEYS}"
    body: dict[str, Any] = {
        "switch_id": str(uuid.UUID(int=(0xC0 << 120) | n)),
        "tutor_id": tutor,
        "from_provider": "zoom",
        "to_provider": "google_meet",
        "generation": n,
        "switched_at": now,
        "pad": "",
    }
    # jsonb's text form separates with ", " and ": "; pad to exactly PAYLOAD_BYTES
    size = len(json.dumps(body))
    body["pad"] = "x" * (PAYLOAD_BYTES - size)
    return json.dumps(body)


def _headers(now: str) -> str:
    """The outbox row's CloudEvents attributes, as relink's writers store them."""
    return json.dumps(
        {
            "source": "/relink/bench",
            "time": now,
            "specversion": "1.0",
            "dataschema": events.schema_uri("provider.switched"),
        }
    )


def fill(conninfo: str, *, rows: int, topic: str) -> int:
    """COPY `rows` outbox rows in 1,000-row transactions; return the payload's measured size."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    headers = _headers(now)
    copy = (
        "COPY outbox (event_id, aggregate_type, aggregate_id, event_type, topic, payload, headers)"
        " FROM STDIN"
    )
    with psycopg.connect(conninfo) as conn:
        for start in range(1, rows + 1, COPY_BATCH):
            with conn.transaction(), conn.cursor().copy(copy) as out:
                for n in range(start, min(rows, start + COPY_BATCH - 1) + 1):
                    out.write_row(
                        (
                            event_id(n),
                            "tutor",
                            f"tutor-{n % KEYS}",
                            "provider.switched",
                            topic,
                            _payload(n, now),
                            headers,
                        )
                    )
        row = conn.execute("SELECT avg(octet_length(payload::text)) FROM outbox").fetchone()
    return round(float(row[0])) if row and row[0] is not None else 0


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=PARTITIONS,
                replication_factor=1,
                config={"message.timestamp.type": "LogAppendTime"},
            )
        ]
    )
    for future in futures.values():
        future.result(timeout=30)


def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics([topic]).values():
        with contextlib.suppress(Exception):  # cleanup: a topic already gone is fine
            future.result(timeout=30)


def postmaster_pid(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        # while the connection is open: its backend ends with it
        return int(psutil.Process(int(row[0])).ppid())


class CpuMeter:
    """CPU seconds of a set of processes; a process that ends keeps its last sample."""

    def __init__(self, roots: Callable[[], list[psutil.Process]]) -> None:
        self._roots = roots
        self._seen: dict[tuple[int, float], float] = {}
        self._base = self._sample(update=False)

    def _processes(self) -> Iterator[psutil.Process]:
        for root in self._roots():
            yield root
            try:
                yield from root.children(recursive=True)
            except psutil.NoSuchProcess:
                continue

    def _sample(self, *, update: bool = True) -> float:
        total = 0.0
        for proc in self._processes():
            try:
                times = proc.cpu_times()
                key = (proc.pid, proc.create_time())
            except psutil.NoSuchProcess:
                continue
            self._seen[key] = times.user + times.system
        total = sum(self._seen.values())
        return total

    def sample(self) -> None:
        self._sample()

    def seconds(self) -> float:
        return sum(self._seen.values()) - self._base


@dataclass
class Delivery:
    """What one measurement saw on its topic."""

    count: int = 0
    first_ms: float = 0.0
    last_ms: float = 0.0
    ids: set[str] = field(default_factory=set)


def _consumer(bootstrap: str, topic: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    return consumer


def _id_of(headers: Any) -> str | None:
    # relink's relay: CloudEvents `ce_id`; the Outbox Event Router: `id`
    found = dict(headers or [])
    value = found.get("ce_id") or found.get("id")
    if isinstance(value, bytes):
        return value.decode().strip('"')
    return None


def measure(
    *,
    command: list[str],
    env: dict[str, str],
    bootstrap: str,
    topic: str,
    rows: int,
    pg_conninfo: str,
    timeout_s: float = 600.0,
    log_path: Path | None = None,
) -> dict[str, Any]:
    """Launch `command`, read the topic until every row is there, stop it; return the figures."""
    consumer = _consumer(bootstrap, topic)
    postmaster = psutil.Process(postmaster_pid(pg_conninfo))
    pg_cpu = CpuMeter(lambda: [postmaster])
    seen = Delivery()
    out = log_path.open("ab") if log_path else subprocess.DEVNULL
    try:
        launched = time.time()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        handle = psutil.Process(process.pid)
        cpu = CpuMeter(lambda: [handle] if handle.is_running() else [])
        deadline = time.monotonic() + timeout_s
        try:
            while seen.count < rows:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{command[0]}: only {seen.count} of {rows} records on {topic}"
                        f" after {timeout_s:.0f} s"
                        + (f"; read {log_path}\n{tail(log_path)}" if log_path else "")
                    )
                for message in consumer.consume(1000, timeout=0.2):
                    if message.error():
                        continue
                    stamp = float(message.timestamp()[1])
                    if seen.count == 0:
                        seen.first_ms = stamp
                    seen.last_ms = max(seen.last_ms, stamp)
                    seen.count += 1
                    found = _id_of(message.headers())
                    if found:
                        seen.ids.add(found)
                cpu.sample()
                pg_cpu.sample()
                if process.poll() is not None and seen.count < rows:
                    if process.returncode != 0:
                        raise RuntimeError(
                            f"{command[0]} exited with {process.returncode} after"
                            f" {seen.count} of {rows} records"
                            + (f"; read {log_path}\n{tail(log_path)}" if log_path else "")
                        )
                    # the relay exits when idle: what it published is acked, so only the
                    # consumer's fetch is still to come
                    deadline = min(deadline, time.monotonic() + 15)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    finally:
        consumer.close()
        if log_path and not isinstance(out, int):
            out.close()
    from_launch = seen.last_ms / 1000 - launched
    streaming = (seen.last_ms - seen.first_ms) / 1000
    return {
        "eps_from_launch": round(rows / from_launch, 1),
        "eps_streaming": round(rows / streaming, 1) if streaming > 0 else None,
        "launch_to_first_s": round(seen.first_ms / 1000 - launched, 3),
        "cpu_s_per_100k": round(cpu.seconds() * 100_000 / rows, 2),
        "postgres_cpu_s_per_100k": round(pg_cpu.seconds() * 100_000 / rows, 2),
        "delivered": seen.count,
        "distinct_ids": len(seen.ids),
    }


def check_delivery(figures: dict[str, Any], rows: int, what: str) -> None:
    if figures["delivered"] != rows or figures["distinct_ids"] != rows:
        raise RuntimeError(
            f"{what}: {figures['delivered']} records, {figures['distinct_ids']} distinct ids"
            f" for {rows} rows"
        )


def relay_command() -> list[str]:
    return [
        os.path.join(os.path.dirname(sys.executable), "relink"),
        "relay",
        "--until-idle",
        "--idle-seconds",
        "0",
    ]


def relay_env(database_url: str, bootstrap: str, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RELINK_TOPIC_PREFIX": prefix,
        "RELINK_LOG_LEVEL": "WARNING",
    }


def measure_relink(
    *, database_url: str, conninfo: str, bootstrap: str, prefix: str, rows: int
) -> dict[str, Any]:
    """relink's relay on the peer's basis: fill, launch `relink relay --until-idle`, time it."""
    topic = f"{prefix}provider.switched"
    create_topic(bootstrap, topic)
    try:
        payload = fill(conninfo, rows=rows, topic=topic)
        figures = measure(
            command=relay_command(),
            env=relay_env(database_url, bootstrap, prefix),
            bootstrap=bootstrap,
            topic=topic,
            rows=rows,
            pg_conninfo=conninfo,
        )
    finally:
        if not os.environ.get("RELINK_BENCH_KEEP_TOPICS"):
            delete_topic(bootstrap, topic)
    check_delivery(figures, rows, "relink relay")
    figures["payload_bytes"] = payload
    return figures


# --- the peer ---------------------------------------------------------------------------


def _pom_versions() -> dict[str, str]:
    text = POM.read_text()
    found = {}
    for name in ("kafka.version", "debezium.version"):
        start = text.index(f"<{name}>") + len(name) + 2
        found[name] = text[start : text.index(f"</{name}>")]
    return found


class PeerJars:
    """Kafka Connect + Debezium's jars, fetched once with mvn under the devstack home."""

    def __init__(self, home: Path) -> None:
        versions = _pom_versions()
        self.versions = versions
        tag = f"connect-{versions['kafka.version']}-debezium-{versions['debezium.version']}"
        self.root = home.expanduser().resolve() / "peer" / tag
        self.lib = self.root / "lib"

    def present(self) -> bool:
        return (self.root / ".complete").exists()

    def fetch(self) -> None:
        if self.present():
            return
        if shutil.which("mvn") is None:
            raise ToolMissingError("Maven (`mvn`) fetches the peer's jars: apt-get install maven")
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.copy(POM, self.root / "pom.xml")
        shutil.rmtree(self.lib, ignore_errors=True)
        log = self.root / "mvn.log"
        print(f"peer: fetching {self.root.name} with mvn ...", flush=True)
        with log.open("w") as out:
            result = subprocess.run(
                ["mvn", "-q", "-B", "dependency:copy-dependencies",
                 "-DoutputDirectory=lib", "-DincludeScope=runtime"],
                cwd=self.root, stdout=out, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        if result.returncode != 0:
            raise DevstackError(
                f"fetching the peer's jars with mvn failed; read {log}\n{tail(log)}"
            )
        (self.root / ".complete").write_text(f"{len(list(self.lib.glob('*.jar')))} jars\n")


LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
"""


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise ToolMissingError(
            "Java 17+ runs Kafka Connect: apt-get install openjdk-17-jre-headless"
        )
    return found


def connector_properties(
    *, name: str, pg_port: int, database: str, prefix: str, tuning: dict[str, str]
) -> dict[str, str]:
    """Debezium's PostgreSQL connector + the Outbox Event Router mapped to relink's outbox."""
    return {
        "name": name,
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": "127.0.0.1",
        "database.port": str(pg_port),
        "database.user": SUPERUSER,
        "database.password": "",
        "database.dbname": database,
        "topic.prefix": f"{prefix}cdc",
        "table.include.list": "public.outbox",
        # the slot and the publication exist before the rows are inserted; no snapshot
        "slot.name": name,
        "publication.name": name,
        "publication.autocreate.mode": "disabled",
        "snapshot.mode": "no_data",
        "transforms": "outbox",
        "transforms.outbox.type": "io.debezium.transforms.outbox.EventRouter",
        "transforms.outbox.table.field.event.id": "event_id",
        "transforms.outbox.table.field.event.key": "aggregate_id",
        "transforms.outbox.table.field.event.payload": "payload",
        "transforms.outbox.table.fields.additional.placement": (
            "event_type:header:ce_type,headers:header:ce_headers"
        ),
        # relink's rows carry their full topic name: route by it, as the relay does
        "transforms.outbox.route.by.field": "topic",
        "transforms.outbox.route.topic.replacement": "${routedByValue}",
        "transforms.outbox.table.expand.json.payload": "false",
        **tuning,
    }


def worker_properties(*, bootstrap: str, work: Path) -> dict[str, str]:
    return {
        "bootstrap.servers": bootstrap,
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.storage.StringConverter",
        "offset.storage.file.filename": str(work / "offsets"),
        "offset.flush.interval.ms": "10000",
        "listeners": f"http://127.0.0.1:{CONNECT_REST_PORT}",
    }


def _write_properties(path: Path, values: dict[str, str]) -> None:
    lines = [f"{k}={v.replace(chr(92), chr(92) * 2)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")


@contextmanager
def _peer_process(
    *,
    jars: PeerJars,
    pg_port: int,
    database: str,
    conninfo: str,
    bootstrap: str,
    prefix: str,
    tuning: dict[str, str],
    work: Path,
) -> Iterator[tuple[str, list[str], Path]]:
    """The topic, the slot, the publication and Connect's files: (topic, command, log)."""
    topic = f"{prefix}provider.switched"
    name = f"peer_{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    (work / name).mkdir(parents=True, exist_ok=True)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE PUBLICATION {name} FOR TABLE outbox")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    try:
        worker = work / f"{name}-worker.properties"
        connector = work / f"{name}-connector.properties"
        log4j = work / "log4j2.properties"
        log4j.write_text(LOG4J2)
        _write_properties(worker, worker_properties(bootstrap=bootstrap, work=work / name))
        _write_properties(
            connector,
            connector_properties(
                name=name, pg_port=pg_port, database=database, prefix=prefix, tuning=tuning
            ),
        )
        command = [
            _java(),
            "-Xms256m",
            "-Xmx512m",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{jars.lib}/*",
            "org.apache.kafka.connect.cli.ConnectStandalone",
            str(worker),
            str(connector),
        ]
        yield topic, command, work / f"{name}.log"
    finally:
        if not os.environ.get("RELINK_BENCH_KEEP_TOPICS"):
            delete_topic(bootstrap, topic)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for _ in range(50):  # the walsender lets go of the slot a moment after Connect exits
                try:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                    break
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.2)
                except psycopg.errors.UndefinedObject:
                    break
            conn.execute(f"DROP PUBLICATION IF EXISTS {name}")


def measure_peer(*, rows: int, **peer: Any) -> dict[str, Any]:
    """Debezium + Outbox Event Router in Connect standalone on the same basis."""
    with _peer_process(**peer) as (topic, command, log_path):
        payload = fill(peer["conninfo"], rows=rows, topic=topic)
        figures = measure(
            command=command,
            env=dict(os.environ),
            bootstrap=peer["bootstrap"],
            topic=topic,
            rows=rows,
            pg_conninfo=peer["conninfo"],
            log_path=log_path,
        )
    check_delivery(figures, rows, "Debezium")
    figures["payload_bytes"] = payload
    return figures


# --- commit -> append latency -----------------------------------------------------------------

LATENCY_NOTE = (
    "broker LogAppendTime (1 ms resolution) minus pg_xact_commit_timestamp of the inserting"
    " transaction; one 300 B event per transaction at a steady rate, the process already"
    " streaming (a probe row delivered first)"
)


def _insert_one(conn: psycopg.Connection[Any], topic: str, n: int, now: str) -> tuple[str, int]:
    event = str(uuid.uuid4())
    row = conn.execute(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic,"
        " payload, headers) VALUES (%s, 'tutor', %s, 'provider.switched', %s, %s, %s)"
        " RETURNING xmin::text::bigint",
        (event, f"tutor-{n % KEYS}", topic, _payload(n, now), _headers(now)),
    ).fetchone()
    conn.commit()
    assert row is not None
    return event, int(row[0])


def latency(
    *,
    command: list[str],
    env: dict[str, str],
    bootstrap: str,
    topic: str,
    conninfo: str,
    rate: int,
    seconds: float,
    log_path: Path | None = None,
) -> dict[str, Any]:
    """Commit -> broker append of one event per transaction at `rate`/s, once streaming."""
    consumer = _consumer(bootstrap, topic)
    out = log_path.open("ab") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    xids: dict[str, int] = {}
    stamps: dict[str, float] = {}
    try:
        with psycopg.connect(conninfo) as conn:
            ready = False
            deadline = time.monotonic() + 300
            while not ready:  # a probe row through first: the process is streaming
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{command[0]} never delivered a probe to {topic}"
                        + (f"; read {log_path}\n{tail(log_path)}" if log_path else "")
                    )
                _insert_one(conn, topic, 0, now)
                ready = bool(consumer.consume(10, timeout=1.0))
            total = int(rate * seconds)
            start = time.monotonic()
            for n in range(1, total + 1):
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                event, xid = _insert_one(conn, topic, n, now)
                xids[event] = xid
            achieved = total / (time.monotonic() - start)
            deadline = time.monotonic() + 120
            while len(stamps) < len(xids) and time.monotonic() < deadline:
                for message in consumer.consume(1000, timeout=0.5):
                    found = _id_of(message.headers()) if message.error() is None else None
                    if found in xids:
                        stamps[found] = float(message.timestamp()[1])
            commits: dict[int, float] = dict(
                conn.execute(
                    "SELECT x, extract(epoch FROM pg_xact_commit_timestamp(x::text::xid)) * 1000"
                    " FROM unnest(%s::bigint[]) AS x",
                    (list(xids.values()),),
                ).fetchall()
            )
    finally:
        consumer.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if log_path and not isinstance(out, int):
            out.close()
    if len(stamps) < len(xids):
        raise RuntimeError(f"only {len(stamps)} of {len(xids)} latency events arrived on {topic}")
    values = sorted(stamps[e] - float(commits[x]) for e, x in xids.items())
    return {
        "latency_p50_ms": round(statistics.median(values), 1),
        "latency_p99_ms": round(values[max(0, int(len(values) * 0.99) - 1)], 1),
        "latency_max_ms": round(values[-1], 1),
        "latency_rate_eps": rate,
        "latency_rate_achieved_eps": round(achieved, 1),
        "latency_events": len(values),
    }


def latency_relink(
    *,
    database_url: str,
    conninfo: str,
    bootstrap: str,
    prefix: str,
    rate: int,
    seconds: float,
    work: Path,
) -> dict[str, Any]:
    topic = f"{prefix}provider.switched"
    create_topic(bootstrap, topic)
    try:
        return latency(
            command=relay_command()[:2],  # `relink relay`, running until stopped
            env=relay_env(database_url, bootstrap, prefix),
            bootstrap=bootstrap,
            topic=topic,
            conninfo=conninfo,
            rate=rate,
            seconds=seconds,
            log_path=work / f"relay-{prefix}log",
        )
    finally:
        delete_topic(bootstrap, topic)


def latency_peer(*, rate: int, seconds: float, **peer: Any) -> dict[str, Any]:
    with _peer_process(**peer) as (topic, command, log_path):
        return latency(
            command=command,
            env=dict(os.environ),
            bootstrap=peer["bootstrap"],
            topic=topic,
            conninfo=peer["conninfo"],
            rate=rate,
            seconds=seconds,
            log_path=log_path,
        )


# --- the bench's own PostgreSQL -------------------------------------------------------------


def bench_postgres(home: Path, port: int) -> EmbeddedPostgres:
    return EmbeddedPostgres(
        home=home.expanduser() / "bench-peer",
        port=port,
        server_settings={
            "wal_level": "logical",
            "max_replication_slots": "10",
            "max_wal_senders": "10",
        },
    )


@contextmanager
def fresh_database(pg: EmbeddedPostgres, template: str) -> Iterator[tuple[str, str, str]]:
    """A database copied from the migrated template: (name, SQLAlchemy URL, libpq conninfo)."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = pg.superuser_dsn
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    base = f"127.0.0.1:{pg.port}/{name}"
    try:
        yield name, f"postgresql+psycopg://{SUPERUSER}@{base}", f"postgresql://{SUPERUSER}@{base}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrated_template(pg: EmbeddedPostgres) -> str:
    name = f"bench_tpl_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg.superuser_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{pg.port}/{name}")
    return name


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("eps_from_launch", "eps_streaming", "launch_to_first_s", "cpu_s_per_100k",
            "postgres_cpu_s_per_100k")  # fmt: skip
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[f"{key}_rounds"] = values
        out[key] = round(statistics.median(values), 2) if values else None
    out["payload_bytes"] = runs[0]["payload_bytes"] if runs else None
    return out


def _ratios(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> list[float]:
    return [round(x[key] / y[key], 2) for x, y in zip(a, b, strict=True) if x[key] and y[key]]


def run(
    *,
    rows: int = 100_000,
    rounds: int = 3,
    pg_port: int = PEER_PG_PORT,
    topic_prefix: str | None = None,
    tuned: bool = True,
    latency_s: float = 20.0,
    latency_rate: int = 500,
) -> dict[str, Any]:
    """Interleave relink's relay and the peer (defaults, then tuned) for `rounds` rounds.

    Then, unless `latency_s` is 0, commit -> append latency of each at `latency_rate`/s.
    """
    from devtools.devstack.stack import Devstack

    settings = DevstackSettings()
    jars = PeerJars(settings.home)
    jars.fetch()
    stack = Devstack(settings)
    report = stack.up()
    pg = bench_postgres(settings.home, pg_port)
    pg_started = not pg.running()
    prefix = topic_prefix or f"bench{uuid.uuid4().hex[:6]}."
    engines: dict[str, list[dict[str, Any]]] = {"relink": [], "debezium_default": []}
    if tuned:
        engines["debezium_tuned"] = []
    latencies: dict[str, dict[str, Any]] = {}
    try:
        pg.start()
        template = _migrated_template(pg)
        bootstrap = stack.kafka_bootstrap
        work = settings.home.expanduser().resolve() / "peer" / "runs"
        work.mkdir(parents=True, exist_ok=True)
        for n in range(1, rounds + 1):
            for engine in engines:
                label = f"{prefix}r{n}-{engine.replace('_', '-')}."
                print(f"peer bench: round {n}/{rounds}, {engine}, {rows} rows ...", flush=True)
                with fresh_database(pg, template) as (database, url, conninfo):
                    if engine == "relink":
                        figures = measure_relink(
                            database_url=url, conninfo=conninfo, bootstrap=bootstrap,
                            prefix=label, rows=rows,
                        )  # fmt: skip
                    else:
                        figures = measure_peer(
                            jars=jars, pg_port=pg.port, database=database, conninfo=conninfo,
                            bootstrap=bootstrap, prefix=label, rows=rows,
                            tuning=TUNED if engine == "debezium_tuned" else {}, work=work,
                        )  # fmt: skip
                engines[engine].append(figures)
                print(
                    f"  {figures['eps_from_launch']}/s from launch,"
                    f" {figures['eps_streaming']}/s streaming,"
                    f" {figures['cpu_s_per_100k']} CPU-s/100k"
                    f" (PostgreSQL {figures['postgres_cpu_s_per_100k']})",
                    flush=True,
                )
        for engine in engines if latency_s > 0 else ():
            label = f"{prefix}latency-{engine.replace('_', '-')}."
            print(f"peer bench: latency of {engine} at {latency_rate}/s ...", flush=True)
            with fresh_database(pg, template) as (database, url, conninfo):
                if engine == "relink":
                    figures = latency_relink(
                        database_url=url, conninfo=conninfo, bootstrap=bootstrap,
                        prefix=label, rate=latency_rate, seconds=latency_s, work=work,
                    )  # fmt: skip
                else:
                    figures = latency_peer(
                        jars=jars, pg_port=pg.port, database=database, conninfo=conninfo,
                        bootstrap=bootstrap, prefix=label, rate=latency_rate,
                        seconds=latency_s, work=work,
                        tuning=TUNED if engine == "debezium_tuned" else {},
                    )  # fmt: skip
            latencies[engine] = figures
            print(
                f"  p50 {figures['latency_p50_ms']} ms, p99 {figures['latency_p99_ms']} ms",
                flush=True,
            )
        with psycopg.connect(pg.superuser_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
    finally:
        if pg_started:
            pg.stop()
        stack.down(parts=tuple(report.started))
    relink, default = engines["relink"], engines["debezium_default"]
    from_launch = _ratios(relink, default, "eps_from_launch")
    streaming = _ratios(relink, default, "eps_streaming")
    result: dict[str, Any] = {
        "command": (
            f"relink bench peer --rows {rows} --rounds {rounds} --latency-s {latency_s:g}"
            f" --latency-rate {latency_rate}"
        ),
        "rows": rows,
        "rounds": rounds,
        "order": "per round: " + ", ".join(engines),
        "basis": BASIS,
        "peer": (
            f"Debezium {jars.versions['debezium.version']} PostgreSQL connector (pgoutput) +"
            f" Outbox Event Router, Kafka Connect standalone {jars.versions['kafka.version']}"
        ),
        "postgres": "the bench's own cluster: wal_level=logical, the devstack's other settings",
        "ratio_from_launch": round(statistics.median(from_launch), 2) if from_launch else None,
        "ratio_from_launch_rounds": from_launch,
        "ratio_streaming": round(statistics.median(streaming), 2) if streaming else None,
        "ratio_streaming_rounds": streaming,
        "relink": _summary(relink),
        "debezium_default": _summary(default),
    }
    if tuned:
        tuned_runs = engines["debezium_tuned"]
        result["debezium_tuned"] = _summary(tuned_runs) | {"tuning": TUNED}
        for key, name in (("eps_from_launch", "from_launch"), ("eps_streaming", "streaming")):
            values = _ratios(relink, tuned_runs, key)
            result[f"ratio_{name}_tuned_rounds"] = values
            result[f"ratio_{name}_tuned"] = round(statistics.median(values), 2) if values else None
    if latencies:
        result[f"latency_p99_ms_at_{latency_rate}"] = {
            engine: figures["latency_p99_ms"] for engine, figures in latencies.items()
        }
        for engine, figures in latencies.items():
            result[engine]["latency"] = figures
        result["latency_note"] = LATENCY_NOTE
    record("relay", {"peer": result})
    return result
