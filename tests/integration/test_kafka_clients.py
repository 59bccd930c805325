"""Every Kafka client relink uses agrees on partitions for the same key."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Producer

from services.core.kafka import create_topics, delete_topics, producer_config
from services.core.settings import CommonSettings

KEYS = [f"tutor-{i}" for i in range(24)]


@pytest.fixture
def topic(kafka_bootstrap: str):  # type: ignore[no-untyped-def]
    settings = CommonSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    name = f"clients-{uuid.uuid4().hex[:8]}"
    create_topics(settings, names=[name], partitions=6)
    yield name
    delete_topics(settings, [name])


def _produce(kafka_bootstrap: str, topic: str) -> dict[str, int]:
    """Produce one message per key with confluent-kafka; return the partition of each key."""
    producer = Producer(producer_config(CommonSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)))
    placed: dict[str, int] = {}

    def on_delivery(err, msg) -> None:  # type: ignore[no-untyped-def]
        assert err is None, err
        placed[msg.key().decode()] = msg.partition()

    for key in KEYS:
        producer.produce(
            topic, key=key.encode(), value=f"v-{key}".encode(), on_delivery=on_delivery
        )
    assert producer.flush(30) == 0
    return placed


async def test_confluent_and_aiokafka_agree_on_partitions(kafka_bootstrap: str, topic: str) -> None:
    placed = _produce(kafka_bootstrap, topic)
    assert len(set(placed.values())) > 1, "keys should spread over several partitions"

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    received: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 30
        while len(received) < len(KEYS) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, messages in batch.items():
                for msg in messages:
                    received[msg.key.decode()] = tp.partition
    finally:
        await consumer.stop()
    assert received == placed

    # and aiokafka's own producer (murmur2, the Java client's) places keys the same way
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for key in KEYS:
            meta = await producer.send_and_wait(topic, key=key.encode(), value=b"again")
            assert meta.partition == placed[key], key
    finally:
        await producer.stop()


def test_a_faust_agent_sees_the_same_partitions(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    placed = _produce(kafka_bootstrap, topic)
    probe = Path(__file__).with_name("faust_probe.py")
    outfile = tmp_path / "received.jsonl"
    log = tmp_path / "faust.log"
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(probe),
                kafka_bootstrap,
                topic,
                str(tmp_path / "data"),
                str(outfile),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    received: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 90
        while len(received) < len(KEYS) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if outfile.exists():
                for line in outfile.read_text().splitlines():
                    record = json.loads(line)
                    received[record["key"]] = record["partition"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert received == placed, log.read_text()[-3000:]
