"""Which tutors a relay publishes for: pure arithmetic on slots.

A tutor's slot is `hashtext(tutor_id) & 0x7fffffff mod slot_count`, computed
by PostgreSQL in the claim query (the relay never needs the hash itself).
Relay N of M owns the slots s with s % M == N and holds each one with a
session advisory lock, so one tutor's rows are only ever published by one
relay at a time — the condition for per-tutor order with several relays.
"""

from __future__ import annotations

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
