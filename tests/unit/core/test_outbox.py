"""The pure parts of the outbox writer: its lock keys and the rows it accepts."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.orm import Session

from services.core import events, outbox
from services.core.settings import CommonSettings
from services.relay.domain import SLOT_LOCK_CLASS


def test_the_outbox_lock_class_is_not_the_relays() -> None:
    assert outbox.OUTBOX_LOCK_CLASS != SLOT_LOCK_CLASS


def test_a_tutors_lock_key_is_a_stable_int4() -> None:
    tutor = uuid.UUID("00000000-0000-0000-0000-000000000017")
    keys = {outbox.lock_key(tutor), outbox.lock_key(str(tutor))}
    assert len(keys) == 1
    (key,) = keys
    assert -(2**31) <= key < 2**31
    assert key == outbox.lock_key(str(tutor))


def test_rows_of_another_tutor_are_refused_before_any_sql() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    values = events.outbox_row(
        "provider.switched",
        {
            "switch_id": str(uuid.uuid4()),
            "tutor_id": b,
            "from_provider": "zoom",
            "to_provider": "google_meet",
            "generation": 1,
            "switched_at": "2026-01-01T00:00:00+00:00",
        },
        tutor_id=b,
        source="/relink/tests",
        topics=CommonSettings(),
    )
    with Session() as unbound, pytest.raises(ValueError, match="appended under the lock"):
        outbox.append(unbound, a, [values])
