"""Audit use cases: replay and verify `audit_log` against every relink topic (from the
beginning or a time), and show a tutor's history.

Replay is idempotent (ON CONFLICT DO NOTHING on the event id), so it can run
beside a live notifier and be repeated. It reads with `assign` and never
commits offsets, so it touches no consumer group.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime
from typing import Any

from services.core import events
from services.notifier import domain
from services.notifier.adapters.db import AuditBulkStore, AuditReplayWriter, NotifierDb
from services.notifier.adapters.kafka import AuditTopicReader, parse_for_audit, raw_of
from services.notifier.domain import ReplayReport, VerifyReport

Progress = Callable[[int], None]
# Messages per parse task handed to a worker process.
PARSE_CHUNK = 2000


class AuditTrail:
    """Replay, verify and show the audit trail."""

    def __init__(self, *, reader: AuditTopicReader, bulk: AuditBulkStore, db: NotifierDb) -> None:
        self.reader = reader
        self.bulk = bulk
        self.db = db

    def close(self) -> None:
        self.db.engine.dispose()

    def tutor_history(self, *, tutor_id: uuid.UUID, limit: int) -> list[dict[str, Any]]:
        """A tutor's audit rows, oldest first."""
        with self.db.transaction() as s:
            return self.db.tutor_history(s, tutor_id=tutor_id, limit=limit)

    def replay(
        self,
        *,
        since: datetime | None = None,
        workers: int | None = None,
        on_plan: Callable[[int], None] | None = None,
        on_progress: Progress | None = None,
    ) -> ReplayReport:
        """Rebuild `audit_log` from the topics; rows already there are left as they are.

        Parsing and schema validation cost ~25 µs an event in Python, so they run
        in `workers` processes (default: one per core) while this process reads
        Kafka and writes PostgreSQL; the pool is started before the Kafka client
        so no librdkafka thread is forked.
        """
        report = ReplayReport()
        count = workers if workers is not None else (os.cpu_count() or 1)
        pool = (
            ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("forkserver"))
            if count > 1
            else None
        )
        try:
            with self.bulk.replay_writer() as writer:
                in_flight: deque[tuple[int, Future[tuple[list[tuple[Any, ...]], int]]]] = deque()
                for batch in self.reader.read_batches(since=since, on_plan=on_plan):
                    raw = [raw_of(m) for m in batch]
                    for i in range(0, len(raw), PARSE_CHUNK):
                        chunk = raw[i : i + PARSE_CHUNK]
                        if pool is None:
                            _write(writer, report, len(chunk), domain.rows_of(chunk), on_progress)
                            continue
                        in_flight.append((len(chunk), pool.submit(domain.rows_of, chunk)))
                    while len(in_flight) > 2 * count:
                        size, future = in_flight.popleft()
                        _write(writer, report, size, future.result(), on_progress)
                while in_flight:
                    size, future = in_flight.popleft()
                    _write(writer, report, size, future.result(), on_progress)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        return report

    def verify(
        self,
        *,
        since: datetime | None = None,
        on_plan: Callable[[int], None] | None = None,
        on_progress: Progress | None = None,
    ) -> VerifyReport:
        """Compare what the topics hold with `audit_log`; report every difference."""
        report = VerifyReport()
        expected: dict[str, dict[str, Any]] = {}
        for batch in self.reader.read_batches(since=since, on_plan=on_plan):
            for message in batch:
                try:
                    event = parse_for_audit(message)
                except (events.InvalidEvent, events.SkippedEvent):
                    continue
                report.events_on_topics += 1
                expected.setdefault(str(uuid.UUID(event.id)), domain.expected_audit_row(event))
            if on_progress is not None:
                on_progress(len(batch))
        seen: set[str] = set()
        for actual in self.bulk.audit_rows(since=since, columns=domain.COMPARED_COLUMNS):
            event_id = str(actual["event_id"])
            report.rows_in_table += 1
            want = expected.get(event_id)
            if want is None:
                report.extra.append(event_id)
                continue
            seen.add(event_id)
            for column, on_topic, in_table in domain.audit_differences(want, actual):
                report.different.append((event_id, column, on_topic, in_table))
        report.missing = sorted(set(expected) - seen)
        report.distinct_events = len(expected)
        return report


def _write(
    writer: AuditReplayWriter,
    report: ReplayReport,
    size: int,
    parsed: tuple[list[tuple[Any, ...]], int],
    on_progress: Progress | None,
) -> None:
    rows, invalid = parsed
    report.inserted += writer.write(rows)
    report.read += size
    report.skipped_invalid += invalid
    if on_progress is not None:
        on_progress(size)
