"""`relink bench peer` and `relink bench relay`'s peer-way figures, end to end at a tiny size.

The peer bench runs the real Kafka Connect + Debezium (jars fetched by mvn into
the devstack home on first use) beside `relink relay`, on a PostgreSQL of its
own with wal_level=logical; the test keeps the measured topics and reads every
record back itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from devtools.provider_sim.server import free_port

ROWS = 2000


def _relink() -> str:
    return os.path.join(os.path.dirname(sys.executable), "relink")


Record = tuple[bytes | None, dict[str, Any]]


def _records(bootstrap: str, topic: str, expected: int) -> list[Record]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}"})
    out: list[Record] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        idle = 0
        while len(out) < expected and idle < 20:
            batch = consumer.consume(1000, timeout=0.5)
            idle = 0 if batch else idle + 1
            for message in batch:
                if message.error() is None:
                    out.append((message.key(), dict(message.headers() or [])))
    finally:
        consumer.close()
    return out


def _expected_ids() -> set[str]:
    # the bench's rows carry event ids 0xB0 << 120 | n, n = 1..rows
    return {str(uuid.UUID(int=(0xB0 << 120) | n)) for n in range(1, ROWS + 1)}


def _delete(bootstrap: str, topics: list[str]) -> None:
    if topics:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.delete_topics(topics).values():
            future.result(timeout=30)


def test_bench_peer_runs_debezium_and_the_relay_on_the_same_rows(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = f"peertest{uuid.uuid4().hex[:6]}."
    results = tmp_path / "results.json"
    # batches of 500: the relay's records span several milliseconds, so first -> last
    # (the streaming figure) is defined even at this tiny size
    env = {**os.environ, "RELINK_BENCH_RESULTS": str(results), "RELINK_RELAY_BATCH_SIZE": "500"}
    command = [
        _relink(), "bench", "peer", "--rows", str(ROWS), "--rounds", "1",
        "--pg-port", str(free_port()), "--topic-prefix", prefix, "--keep-topics",
        "--latency-s", "2", "--latency-rate", "100",
    ]  # fmt: skip
    subprocess.run(command, env=env, check=True, timeout=900)

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    kept = sorted(t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix))
    topics = [t for t in kept if t.startswith(f"{prefix}r1-")]  # not the latency runs'
    try:
        assert topics == sorted(
            f"{prefix}r1-{engine}.provider.switched"
            for engine in ("relink", "debezium-default", "debezium-tuned")
        )
        for topic in topics:
            records = _records(kafka_bootstrap, topic, ROWS)
            # relink's relay stamps CloudEvents' ce_id; the Outbox Event Router an `id` header
            header = "ce_id" if "-relink." in topic else "id"
            ids = [headers[header].decode().strip('"') for _, headers in records]
            assert len(ids) == ROWS, topic
            assert set(ids) == _expected_ids(), topic
            # both key by the outbox's aggregate_id (1,000 tutors)
            assert {key for key, _ in records} == {f"tutor-{n}".encode() for n in range(1000)}
    finally:
        _delete(kafka_bootstrap, kept)

    figures = json.loads(results.read_text())["relay"]["peer"]
    for key in ("ratio_from_launch", "ratio_streaming", "ratio_from_launch_tuned"):
        assert figures[key] > 0
    assert len(figures["ratio_from_launch_rounds"]) == 1
    assert len(figures["ratio_streaming_rounds"]) == 1
    for engine in ("relink", "debezium_default", "debezium_tuned"):
        for key in ("eps_from_launch", "eps_streaming", "cpu_s_per_100k"):
            assert figures[engine][key] > 0, (engine, key)
        assert figures[engine]["payload_bytes"] == 300
    assert figures["debezium_tuned"]["tuning"] == {"poll.interval.ms": "10"}
    # commit -> append latency of each, every event of the steady run delivered
    assert set(figures["latency_p99_ms_at_100"]) == {"relink", "debezium_default", "debezium_tuned"}
    for engine in ("relink", "debezium_default", "debezium_tuned"):
        assert figures[engine]["latency"]["latency_events"] == 200
    assert figures["basis"]["partitions"] == 1


def test_bench_relay_records_the_peer_way_beside_the_old_keys(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"relay": {"throughput_eps": 1234}}))
    # batches of 500: the relay's records span several milliseconds, so first -> last
    # (the streaming figure) is defined even at this tiny size
    env = {**os.environ, "RELINK_BENCH_RESULTS": str(results), "RELINK_RELAY_BATCH_SIZE": "500"}
    command = [_relink(), "bench", "relay", "--rows", str(ROWS), "--no-classic"]
    subprocess.run(command, env=env, check=True, timeout=600)

    relay = json.loads(results.read_text())["relay"]
    assert relay["throughput_eps"] == 1234  # the old keys stay
    for key in (
        "peer_way_eps_from_launch",
        "peer_way_eps_streaming",
        "peer_way_cpu_s_per_100k",
        "peer_way_postgres_cpu_s_per_100k",
    ):
        assert relay[key] > 0, key
    assert relay["peer_way_eps_streaming"] >= relay["peer_way_eps_from_launch"]
    basis = relay["peer_way_basis"]
    assert (basis["rows"], basis["payload_bytes"], basis["keys"]) == (ROWS, 300, 1000)
    assert (basis["partitions"], basis["vacuum"]) == (1, False)
