"""A downstream team's consumer of relink's topics -- copy this folder to start yours.

It keeps a table of each session's current join link (its "effect") in your
own PostgreSQL, fed by `session.migrated`. It needs only what
`requirements.txt` lists (confluent-kafka, the CloudEvents SDK, jsonschema,
psycopg): nothing of relink. What to copy:

* its own consumer group (never share relink's groups);
* the CloudEvents Kafka binding to read the envelope (binary mode: `ce_*`
  headers, the JSON payload as the value, the tutor id as the key);
* the payload checked against relink's published JSON Schema, read from a
  copy of relink's `schemas/` folder (`--schemas`) or fetched from the URL in
  `ce_dataschema` under the base relink serves (`--schema-base-url`);
* a tolerant reader: properties the schema does not name are dropped (relink
  may add optional ones within a version); an event type or a schema version
  this consumer was not built for (`READS`) is skipped, counted and logged,
  never dead-lettered -- relink publishes a new version beside the old one
  for a deprecation window (relink's `schemas/README.md`);
* dedup on (`ce_source`, `ce_id`) by a `processed_events` row in the SAME
  transaction as the effect -- relink delivers at least once, repeats are normal;
* offsets committed only after the effect is durable (a crash in between
  replays the message, and the dedup row makes the replay a no-op);
* a store that is down or drops the connection is waited out: the message is
  applied again on a new connection, with backoff, and nothing is skipped;
* a message that cannot be read at all goes to the dead-letter topic (its
  original key, value and headers plus `dlq_*` ones) and the consumer moves on.

    pip install -r requirements.txt
    python consumer.py --bootstrap 127.0.0.1:19092 --topic session.migrated \
        --group calendar-sync --database-url postgresql://me@localhost/calendar \
        --schemas ../../schemas
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from confluent_kafka import Consumer, Message, Producer
from jsonschema import Draft202012Validator, FormatChecker

log = logging.getLogger("downstream")

# The event types, and the schema version of each, this consumer is built on.
READS = {"session.migrated": 1}
REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time")
DATASCHEMA = re.compile(r"(?:.*/)?(?P<type>[a-z][a-z0-9_.]*)/v(?P<version>[1-9][0-9]{0,3})\.json")

STORE_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS downstream;
CREATE TABLE IF NOT EXISTS downstream.processed_events (
    source text NOT NULL,
    event_id text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);
CREATE TABLE IF NOT EXISTS downstream.session_links (
    session_id text PRIMARY KEY,
    tutor_id text NOT NULL,
    provider text NOT NULL,
    join_url text NOT NULL,
    updated_by_event text NOT NULL
);
"""


class Unreadable(Exception):
    """A message that cannot be read at all: dead-letter it with `reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class NotRead(Exception):
    """A well-formed event of a type or version this consumer does not read: skip it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Event:
    id: str
    source: str
    type: str
    subject: str
    time: datetime
    version: int
    data: dict[str, Any]


class Schemas:
    """relink's JSON Schemas, from a folder or fetched (once each) from the served URLs."""

    def __init__(self, folder: Path | None, base_url: str | None) -> None:
        if folder is None and base_url is None:
            raise SystemExit("give --schemas or --schema-base-url")
        self.folder, self.base_url = folder, (base_url or "").rstrip("/")
        self._validators: dict[tuple[str, int], Draft202012Validator] = {}

    def validator(self, event_type: str, version: int) -> Draft202012Validator:
        key = (event_type, version)
        if key not in self._validators:
            schema = self._load(event_type, version)
            Draft202012Validator.check_schema(schema)
            self._validators[key] = Draft202012Validator(schema, format_checker=FormatChecker())
        return self._validators[key]

    def _load(self, event_type: str, version: int) -> dict[str, Any]:
        if self.folder is not None:
            text = (self.folder / event_type / f"v{version}.json").read_text()
        else:
            # only ever the configured base: never a URL a message names
            url = f"{self.base_url}/{event_type}/v{version}.json"
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
        schema: dict[str, Any] = json.loads(text)
        return schema


def read(message: Message, schemas: Schemas) -> Event:
    """Parse and check one message as a tolerant reader; raise Unreadable or NotRead."""
    headers = {k: v for k, v in (message.headers() or []) if v is not None}
    if message.value() is None:
        raise Unreadable("empty_value", "message has no value")
    missing = [h for h in REQUIRED_HEADERS if not headers.get(h)]
    if missing:
        raise Unreadable("not_cloudevent", f"missing header(s) {', '.join(missing)}")
    try:
        ce = from_binary(
            KafkaMessage(headers=headers, key=message.key(), value=message.value()),
            JSONFormat(),
            CloudEvent,
        )
    except (BaseCloudEventException, ValueError, UnicodeDecodeError) as exc:
        raise Unreadable("bad_envelope", str(exc)) from exc
    data = ce.get_data()
    if not isinstance(data, dict):
        raise Unreadable("bad_payload", "value is not a JSON object")
    event_type = ce.get_type()
    if event_type not in READS:
        raise NotRead("unknown_type", f"{event_type!r} is not read here")
    version = 1
    dataschema = ce.get_dataschema()
    if dataschema:
        match = DATASCHEMA.fullmatch(dataschema)
        if match is None or match["type"] != event_type:
            raise Unreadable("unknown_dataschema", f"{dataschema!r} is not a {event_type} schema")
        version = int(match["version"])
    if version != READS[event_type]:
        raise NotRead(
            "other_version", f"{event_type} v{version}; this consumer reads v{READS[event_type]}"
        )
    validator = schemas.validator(event_type, version)
    known = validator.schema.get("properties", {})
    data = {k: v for k, v in data.items() if k in known}  # tolerant: drop what is not ours
    error = next(iter(validator.iter_errors(data)), None)
    if error is not None:
        raise Unreadable("schema_violation", f"{event_type} v{version}: {error.message}")
    subject = ce.get_subject() or ""
    if not subject or data.get("tutor_id", subject) != subject:
        raise Unreadable("subject_mismatch", "payload tutor_id differs from ce_subject")
    time_ = ce.get_time()
    assert time_ is not None  # a required header, checked above
    return Event(ce.get_id(), ce.get_source(), event_type, subject, time_, version, data)


class Store:
    """The downstream PostgreSQL: the effect and the processed-events row, in one transaction."""

    def __init__(self, url: str, *, max_wait_s: float = 5.0) -> None:
        self.url = url
        self.max_wait_s = max_wait_s
        self.retries = 0
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, application_name="relink-downstream")
            with self._conn.transaction():
                self._conn.execute(STORE_SCHEMA)
        return self._conn

    def connect(self, stopping: Any) -> None:
        self._with_retries(lambda: None, stopping)

    def apply(self, event: Event, stopping: Any) -> bool | None:
        """Record the event's effect once: True applied, False duplicate, None if stopping."""
        return self._with_retries(lambda: self._apply(event), stopping)

    def _with_retries(self, work: Any, stopping: Any) -> Any:
        wait = 0.2
        while not stopping():
            try:
                self._connection()
                return work()
            except psycopg.OperationalError as exc:  # lost connection, server down, ...
                self.retries += 1
                log.warning("store unavailable (%s); again in %.1fs", exc, wait)
                self.close()
                time.sleep(wait)
                wait = min(wait * 2, self.max_wait_s)
        return None

    def _apply(self, event: Event) -> bool:
        conn = self._connection()
        with conn.transaction():
            inserted = conn.execute(
                "INSERT INTO downstream.processed_events (source, event_id) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                (event.source, event.id),
            ).rowcount
            if inserted == 0:
                return False
            if event.type == "session.migrated":
                d = event.data
                conn.execute(
                    "INSERT INTO downstream.session_links (session_id, tutor_id, provider,"
                    " join_url, updated_by_event) VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (session_id) DO UPDATE SET provider = excluded.provider,"
                    " join_url = excluded.join_url, updated_by_event = excluded.updated_by_event",
                    (d["session_id"], event.subject, d["provider"], d["join_url"], event.id),
                )
        return True

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def dead_letter(message: Message, error: Unreadable, producer: Producer, topic: str) -> None:
    """The original key, value and headers, plus why and where; durable before moving on."""
    headers: list[tuple[str, bytes]] = [(k, v or b"") for k, v in (message.headers() or [])]
    headers += [
        ("dlq_reason", error.reason.encode()),
        ("dlq_detail", error.detail[:1000].encode()),
        ("dlq_original_topic", (message.topic() or "").encode()),
        ("dlq_original_partition", str(message.partition()).encode()),
        ("dlq_original_offset", str(message.offset()).encode()),
    ]
    producer.produce(topic, key=message.key(), value=message.value(), headers=headers)
    if producer.flush(30) != 0:
        raise RuntimeError("the dead-letter topic did not acknowledge")


def run(args: argparse.Namespace) -> dict[str, int]:
    schemas = Schemas(args.schemas, args.schema_base_url)
    for event_type, version in READS.items():
        schemas.validator(event_type, version)  # the versions we read must exist: fail now
    store = Store(args.database_url)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    store.connect(lambda: stopping)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    dead_letters = Producer(
        {"bootstrap.servers": args.bootstrap, "enable.idempotence": True, "acks": "all"}
    )
    counts = {"applied": 0, "duplicate": 0, "skipped": 0, "dead-lettered": 0}
    consumer.subscribe(args.topic)
    log.info("consuming %s as %s", ",".join(args.topic), args.group)
    try:
        while not stopping:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                log.warning("consumer error: %s", message.error())
                continue
            where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
            try:
                event = read(message, schemas)
            except NotRead as exc:
                counts["skipped"] += 1
                log.info(
                    "skipped %s (%s, %d skipped so far): %s",
                    where,
                    exc.reason,
                    counts["skipped"],
                    exc.detail,
                )
            except Unreadable as exc:
                dead_letter(message, exc, dead_letters, args.dead_letter_topic)
                counts["dead-lettered"] += 1
                log.warning("dead-lettered %s: %s", where, exc)
            else:
                applied = store.apply(event, lambda: stopping)
                if applied is None:
                    break  # stopping before the effect was durable: do not commit
                counts["applied" if applied else "duplicate"] += 1
            consumer.commit(message=message, asynchronous=False)  # after the effect
    finally:
        consumer.close()
        store.close()
    counts["store-retries"] = store.retries
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--topic", action="append", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--database-url", required=True, help="postgresql://user@host/db")
    parser.add_argument("--schemas", type=Path, help="a copy of relink's schemas/ folder")
    parser.add_argument("--schema-base-url", help="where relink serves its schemas")
    parser.add_argument("--dead-letter-topic", default="relink.dead-letter")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    counts = run(args)
    print(" ".join(f"{k}={v}" for k, v in counts.items()), flush=True)


if __name__ == "__main__":
    main()
