"""The relay's pure rules and value types: no I/O, no clock.

- which tutors a relay publishes for (slot arithmetic);
- what an outbox row is, to the relay;
- what to do with a batch once Kafka has answered.

A tutor's slot is `hashtext(tutor_id) & 0x7fffffff mod slot_count`, computed
by PostgreSQL in the claim query (the relay never needs the hash itself).
Relay N of M owns the slots s with s % M == N and holds each one with a
session advisory lock, so one tutor's rows are only ever published by one
relay at a time — the condition for per-tutor order with several relays.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

# Advisory-lock class id (the first int4 of pg_try_advisory_lock(int4, int4)):
# keeps the relay's locks apart from anyone else's in the same database.
SLOT_LOCK_CLASS = 0x52_4C_59  # "RLY"


def wanted_slots(*, instance: int, instances: int, slot_count: int) -> list[int]:
    """The slots relay `instance` of `instances` should lease."""
    if not 0 <= instance < instances <= slot_count:
        raise ValueError(f"relay {instance} of {instances} with {slot_count} slots")
    return [slot for slot in range(slot_count) if slot % instances == instance]


def owns_everything(held: set[int], *, slot_count: int) -> bool:
    """True when the claim query need not filter by slot at all."""
    return len(held) == slot_count


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """What the relay needs of one outbox row to publish it."""

    id: int
    event_id: uuid.UUID
    aggregate_id: str
    event_type: str
    topic: str
    payload: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Delivery:
    """Kafka's answer for one outbox row: acknowledged, or the error."""

    row_id: int
    tutor_id: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """Rows to mark published, rows to leave for the next try, and why."""

    published: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    first_error: str | None = None


def settle(deliveries: list[Delivery]) -> BatchOutcome:
    """Split a batch, in id order, by Kafka's answers.

    A tutor's rows after its first failed one are not marked even if Kafka
    acknowledged them: they are sent again after the failed row gets through,
    so the last copy a consumer sees follows the tutor's order. (With the
    idempotent producer this only happens for per-message errors such as a
    message too large; a broker outage fails the tail of each partition.)
    """
    published: list[int] = []
    failed: list[int] = []
    blocked: set[str] = set()
    first_error: str | None = None
    for delivery in deliveries:
        if delivery.error is None and delivery.tutor_id not in blocked:
            published.append(delivery.row_id)
            continue
        failed.append(delivery.row_id)
        blocked.add(delivery.tutor_id)
        first_error = first_error or delivery.error or "held back behind an earlier failure"
    return BatchOutcome(published=published, failed=failed, first_error=first_error)


def should_wait_for_notify(claimed: int, *, batch_size: int) -> bool:
    """A short batch means the backlog is drained: sleep until NOTIFY or the poll."""
    return claimed < batch_size
