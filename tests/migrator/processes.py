"""What the multi-process migrator tests read: partitions, assignments and steps in the logs.

`relink migrator` logs its consumer's assignment (aiokafka: "Setting newly
assigned partitions {...} for group ...") and each step with its ids at the
end of the line (`services.core.logs`), so the tests can tell which
process owned which partition and planned which switch.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import Engine, text

from tests.migrator.factory import Factory, Tutor

_ASSIGNED = re.compile(r"Setting newly assigned partitions(.*?)for group", re.DOTALL)
_CREATED = re.compile(r"meeting created switch_id=\S+ session_id=(\S+) meeting_id=(\S+)")
_MIGRATED = re.compile(r"session migrated switch_id=\S+ session_id=(\S+)")
_PLANNED = re.compile(r"plan recorded: (\d+) new rows switch_id=(\S+)")

# Every process timing small, so a SIGKILLed member leaves the group in ~6 s
# (the settings' floor) and its claimed rows come back after a short lease.
FAST_PROCESS = {
    "RELINK_MIGRATOR_SESSION_TIMEOUT_S": "6",
    "RELINK_MIGRATOR_POLL_INTERVAL_S": "0.2",
    "RELINK_MIGRATOR_CLAIM_LEASE_S": "4",
    # The sweep re-plans every current switch and logs it: kept out of the way.
    "RELINK_MIGRATOR_SWEEP_INTERVAL_S": "120",
}


def assigned_partitions(output: str, topic: str) -> set[int] | None:
    """The partitions of `topic` the process's latest rebalance gave it; None before any.

    Faust prints the assignment as a table whose cells are ranges: `{0-2}`, `{0, 2}`.
    """
    found = _ASSIGNED.findall(output)
    if not found:
        return None
    row = re.search(rf"\|\s*{re.escape(topic)}\s*\|\s*\{{([^}}]*)\}}", found[-1])
    if row is None:
        return set()
    partitions: set[int] = set()
    for item in filter(None, (part.strip() for part in row.group(1).split(","))):
        first, _, last = item.partition("-")
        partitions.update(range(int(first), int(last or first) + 1))
    return partitions


def partition_of(tutor_id: uuid.UUID | str, *, partitions: int) -> int:
    """Where a producer puts the tutor's events: murmur2 of the key, as relink's producers do."""
    every = list(range(partitions))
    return int(DefaultPartitioner()(str(tutor_id).encode(), every, every))


def planned_switches(output: str) -> dict[str, int]:
    """Switch id → most rows one plan of this process added (0: it only saw the plan again)."""
    planned: dict[str, int] = {}
    for rows, switch_id in _PLANNED.findall(output):
        planned[switch_id] = max(planned.get(switch_id, 0), int(rows))
    return planned


def unfinished_creates(output: str) -> dict[str, str]:
    """Session id → meeting the process created but never applied (it died in between)."""
    created = dict(_CREATED.findall(output))
    for session_id in _MIGRATED.findall(output):
        created.pop(session_id, None)
    return created


async def tutors_on_partitions(
    factory: Factory, *, per_partition: int, partitions: int, provider: str = "zoom"
) -> dict[int, list[Tutor]]:
    """`per_partition` tutors whose events land on each partition (extra tutors stay idle)."""
    placed: dict[int, list[Tutor]] = {p: [] for p in range(partitions)}
    for _ in range(per_partition * partitions * 10):
        if all(len(t) >= per_partition for t in placed.values()):
            return placed
        tutor = await factory.tutor(provider=provider, students=2)
        spot = placed[partition_of(tutor.id, partitions=partitions)]
        if len(spot) < per_partition:
            spot.append(tutor)
    raise AssertionError(f"could not place {per_partition} tutors on each partition")


def count_where(engine: Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())
