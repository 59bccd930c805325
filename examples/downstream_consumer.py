"""A downstream team's consumer of relink's topics — copy this to start yours.

It keeps a local table of each session's current join link (its "effect"),
fed by `session.migrated`. What to copy:

* its own consumer group (never share relink's groups);
* `services.core.events.parse_message` to parse and validate every message;
* dedup on (`ce_source`, `ce_id`) in the SAME local transaction as the
  effect — relink delivers at least once, so repeats are normal;
* offsets committed only after the effect is durable (a crash in between
  replays the message, and the dedup row makes the replay a no-op);
* a message that cannot be parsed or validated goes to the dead-letter topic
  with the reason, and the consumer moves on.

Here the store is a local SQLite file so the example runs anywhere; in a real
service use your own database, with the same two tables.

    python examples/downstream_consumer.py --topic session.migrated \
        --group calendar-sync --db calendar.sqlite3
"""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, Producer

from services.core import events

log = logging.getLogger("downstream")

SCHEMA = """
CREATE TABLE IF NOT EXISTS processed_events (
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (source, event_id)
);
CREATE TABLE IF NOT EXISTS session_links (
    session_id TEXT PRIMARY KEY,
    tutor_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    join_url TEXT NOT NULL,
    updated_by_event TEXT NOT NULL
);
"""


def open_store(path: Path) -> sqlite3.Connection:
    store = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN/COMMIT below
    store.executescript(SCHEMA)
    return store


def apply(store: sqlite3.Connection, event: events.Event) -> bool:
    """Record the event's effect once; False when (source, id) was seen before."""
    store.execute("BEGIN IMMEDIATE")
    try:
        seen = store.execute(
            "INSERT OR IGNORE INTO processed_events (source, event_id) VALUES (?, ?)",
            event.dedup_key,
        ).rowcount
        if seen == 0:
            store.execute("ROLLBACK")
            return False
        if event.type == events.EventType.SESSION_MIGRATED:
            data = event.data
            store.execute(
                "INSERT INTO session_links (session_id, tutor_id, provider, join_url,"
                " updated_by_event) VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE"
                " SET provider = excluded.provider, join_url = excluded.join_url,"
                " updated_by_event = excluded.updated_by_event",
                (data["session_id"], event.tutor_id, data["provider"], data["join_url"], event.id),
            )
        store.execute("COMMIT")
        return True
    except BaseException:
        store.execute("ROLLBACK")
        raise


def handle(
    message: Message, *, store: sqlite3.Connection, dead_letters: Producer, dead_letter_topic: str
) -> str:
    """Process one message: 'applied', 'duplicate' or 'dead-lettered'."""
    try:
        event = events.parse_message(
            key=message.key(), value=message.value(), headers=message.headers()
        )
    except events.InvalidEvent as exc:
        letter = events.dead_letter(
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=message.key(),
            value=message.value(),
            headers=message.headers(),
            error=exc,
            dead_letter_topic=dead_letter_topic,
        )
        dead_letters.produce(
            letter.topic, key=letter.key, value=letter.value, headers=letter.headers
        )
        # the dead letter must be durable before the offset moves past it
        if dead_letters.flush(30) != 0:
            raise RuntimeError("dead-letter topic did not acknowledge") from exc
        log.warning("dead-lettered %s@%s: %s", message.topic(), message.offset(), exc)
        return "dead-lettered"
    return "applied" if apply(store, event) else "duplicate"


def run(
    *,
    bootstrap: str,
    topics: list[str],
    group: str,
    db: Path,
    dead_letter_topic: str,
    exit_when_idle_s: float | None = None,
) -> dict[str, int]:
    """Consume until SIGTERM (or idle for exit_when_idle_s); return what happened."""
    store = open_store(db)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    dead_letters = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"}
    )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    counts = {"applied": 0, "duplicate": 0, "dead-lettered": 0}
    # "idle" counts from the moment partitions are assigned: joining a group on a
    # freshly started broker can itself take seconds.
    assigned = False

    def on_assign(consumer_: Consumer, partitions: list[Any]) -> None:
        nonlocal assigned, last_message_at
        assigned = True
        last_message_at = time.monotonic()

    consumer.subscribe(topics, on_assign=on_assign)
    last_message_at = time.monotonic()
    try:
        while not stopping:
            message = consumer.poll(0.5)
            if message is None:
                idle_for = time.monotonic() - last_message_at
                if exit_when_idle_s and assigned and idle_for > exit_when_idle_s:
                    break
                continue
            if message.error():
                log.warning("consumer error: %s", message.error())
                continue
            last_message_at = time.monotonic()
            counts[
                handle(
                    message,
                    store=store,
                    dead_letters=dead_letters,
                    dead_letter_topic=dead_letter_topic,
                )
            ] += 1
            consumer.commit(message=message, asynchronous=False)  # after the effect
    finally:
        consumer.close()
        store.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--topic", action="append", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--dead-letter-topic", default="relink.dead-letter")
    parser.add_argument("--exit-when-idle", type=float, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    counts = run(
        bootstrap=args.bootstrap,
        topics=args.topic,
        group=args.group,
        db=args.db,
        dead_letter_topic=args.dead_letter_topic,
        exit_when_idle_s=args.exit_when_idle,
    )
    print(" ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
