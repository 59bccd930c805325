"""`--until-idle` ends only when the whole group is done, not when this member is.

A notifier started after another was killed joins the group only once the dead
member's session times out; by then it has "been idle" longer than
`--idle-seconds`, and the consume call that brings its assignment may return
before the first records are fetched. It used to exit right there, leaving the
records unread (seen as a missing email in
tests/notifier/test_emails.py::test_redelivered_three_times_…). Now idle counts
from the assignment, and the loop also asks Kafka whether the group's committed
offsets reach the end of every partition.
"""

from __future__ import annotations

import threading
import time
from typing import Any, cast

from services.notifier.entrypoint import NotifierLoop
from services.notifier.settings import NotifierSettings
from services.notifier.usecases.notify import RecordReport, SendReport


class Events:
    """A group join that takes longer than the idle time, then records not yet fetched."""

    def __init__(self) -> None:
        self.on_assign: Any = None
        self.calls = 0
        self.lag = 3  # records of the group not yet committed
        self.committed: list[list[str]] = []

    def subscribe(self, on_assign: Any) -> None:
        self.on_assign = on_assign

    def consume(self, *, batch_size: int, timeout_s: float) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            time.sleep(0.3)  # the join waits out the dead member's session
            self.on_assign(None, [])
            return []  # assigned, but nothing fetched yet
        if self.calls == 4:
            return ["a", "b", "c"]  # the records arrive a few polls later
        time.sleep(0.05)
        return []

    def caught_up(self) -> bool:
        return self.lag == 0

    def parse_batch(self, messages: list[str]) -> list[str]:
        return messages

    def dead_letter_refused(self, messages: list[str], refused: list[Any]) -> None:
        pass

    def commit(self, messages: list[str]) -> None:
        self.committed.append(messages)
        self.lag -= len(messages)


class Notifier:
    def record(self, parsed: list[str]) -> RecordReport:
        return RecordReport()

    def send_due(self, *, limit: int) -> SendReport:
        return SendReport()

    def seconds_to_next_send(self) -> float | None:
        return None


def test_until_idle_waits_for_records_the_group_has_not_committed() -> None:
    events = Events()
    loop = NotifierLoop(
        notifier=cast(Any, Notifier()), events=cast(Any, events), settings=NotifierSettings()
    )
    runner = threading.Thread(
        target=loop.run, kwargs={"stop": threading.Event(), "until_idle_s": 0.1}, daemon=True
    )
    runner.start()
    runner.join(timeout=20)
    assert not runner.is_alive(), "the loop never ended"
    assert events.committed == [["a", "b", "c"]], "exited before the group's records were read"
    assert events.lag == 0
