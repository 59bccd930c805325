"""A batch whose unreadable records cannot be dead-lettered (Kafka away) is kept, not lost.

`parse_batch` sends what it cannot read to the dead-letter topic and waits for
the acknowledgement; with the brokers away that fails (`DeadLetterError`).
The loop used to let it escape and die there; the consumed batch then came
back only after a restart. Now the loop keeps the batch (offsets uncommitted),
backs off, parses it again once Kafka answers, and records it: no record of it
is skipped and nothing else is consumed meanwhile.
"""

from __future__ import annotations

import threading
from typing import Any, cast

from services.core.backoff import Backoff
from services.notifier.entrypoint import NotifierLoop
from services.notifier.errors import DeadLetterError
from services.notifier.settings import NotifierSettings
from services.notifier.usecases.notify import RecordReport, SendReport


class Events:
    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.batches = [["readable", "unreadable"]]
        self.parse_attempts = 0
        self.consumed_while_owed = 0
        self.committed: list[list[str]] = []

    def subscribe(self, on_assign: Any) -> None:
        pass

    def consume(self, *, batch_size: int, timeout_s: float) -> list[str]:
        if self.parse_attempts and not self.committed:
            self.consumed_while_owed += 1
        return self.batches.pop(0) if self.batches else []

    def parse_batch(self, messages: list[str]) -> list[str]:
        self.parse_attempts += 1
        if self.parse_attempts < 3:
            raise DeadLetterError("the dead-letter topic did not acknowledge in 30 s")
        return [m for m in messages if m == "readable"]

    def dead_letter_refused(self, messages: list[str], refused: list[Any]) -> None:
        pass

    def commit(self, messages: list[str]) -> None:
        self.committed.append(messages)
        self.stop.set()


class Notifier:
    def __init__(self) -> None:
        self.recorded: list[list[str]] = []

    def record(self, parsed: list[str]) -> RecordReport:
        self.recorded.append(parsed)
        return RecordReport()

    def send_due(self, *, limit: int) -> SendReport:
        return SendReport()

    def seconds_to_next_send(self) -> float | None:
        return None


def test_the_batch_is_parsed_again_and_recorded_once_kafka_answers() -> None:
    stop = threading.Event()
    events, notifier = Events(stop), Notifier()
    loop = NotifierLoop(
        notifier=cast(Any, notifier),
        events=cast(Any, events),
        settings=NotifierSettings(),
    )
    loop.kafka.backoff = Backoff(base_s=0.01, cap_s=0.02)
    runner = threading.Thread(target=loop.run, kwargs={"stop": stop}, daemon=True)
    runner.start()
    runner.join(timeout=20)
    assert not runner.is_alive(), "the loop did not record the batch"
    assert events.parse_attempts == 3
    assert notifier.recorded == [["readable"]]
    assert events.committed == [["readable", "unreadable"]]
    assert events.consumed_while_owed == 0
